"""Celery tasks, beside the services they run, one module per concern; each takes ids and calls one
service. Found by the Celery app's autodiscovery (worker/celery_app.py). Their registered names stay
`worker.tasks.<name>` (where they lived before), so routing (worker/queues.py), beat entries and messages
already queued keep working. The integrations' tasks live in their folders (diagnostics/integrations/)
and are imported here, so that one autodiscovered module registers every task."""

from diagnostics.integrations.pacs_out.tasks import send_pacs_results
from diagnostics.integrations.sign_in.tasks import sync_directory_accounts
from diagnostics.integrations.webhooks.tasks import deliver_study_webhook

from .inference import run_study_inference
from .maintenance import reconcile_stuck_studies, sweep_orphan_files
from .training import run_training, scheduled_retraining

__all__ = [
    "deliver_study_webhook",
    "reconcile_stuck_studies",
    "run_study_inference",
    "run_training",
    "scheduled_retraining",
    "send_pacs_results",
    "sync_directory_accounts",
    "sweep_orphan_files",
]
