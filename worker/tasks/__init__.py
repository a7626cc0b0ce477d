"""Celery tasks, one module per concern. Each task takes ids and calls one service."""

from .inference import run_study_inference
from .maintenance import reconcile_stuck_studies, sweep_orphan_files
from .pacs import send_pacs_results
from .training import run_training, scheduled_retraining
from .webhooks import deliver_study_webhook

__all__ = [
    "deliver_study_webhook",
    "reconcile_stuck_studies",
    "run_study_inference",
    "run_training",
    "scheduled_retraining",
    "send_pacs_results",
    "sweep_orphan_files",
]
