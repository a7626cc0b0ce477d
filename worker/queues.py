"""Every Celery task's queue and options in one table: what runs where, how long it may take and how
it retries. The task decorators take their options from here (``options``), and the app routes by it
(``ROUTES``, set in worker/celery_app.py).

Queues and the workers that consume them (Makefile, docker-compose.yml):

- ``inference``: studies to predict (ONNX Runtime), webhook notifications and results to PACSes (I/O only).
- ``maintenance``: beat's housekeeping (the stale-study and stale-training-run reconciler), on its own
  queue so that it still runs when the inference queue is stuck.
- ``training``: retraining runs (TensorFlow), one at a time.

The tasks live in diagnostics/tasks/; their names keep the prefix ``worker.tasks.`` of the package they
were first written in, so that routes, beat entries and messages already in Redis still find them.

Heatmaps have no queue: the inference task stores each with its prediction (diagnostics/services/heatmaps.py).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import DatabaseError, InterfaceError

INFERENCE, MAINTENANCE, TRAINING = "inference", "maintenance", "training"

# Retry only what a retry can fix: the database or its connection going away.
RETRY_ON_DATABASE_ERRORS: dict[str, Any] = {
    "autoretry_for": (DatabaseError, InterfaceError),
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "max_retries": 5,
}
# A task that a dying worker had taken is handed to another worker, not lost.
AT_LEAST_ONCE: dict[str, Any] = {"acks_late": True, "reject_on_worker_lost": True}

# Webhooks: backoff 30 s, 1, 2, 4, … min, capped at 1 h, with jitter: about 4 h over 9 attempts.
WEBHOOK_MAX_RETRIES = 8

# Results to a PACS: failed deliveries back off 30 s, 1, 2, 4, … min, capped at 1 h: about 4 h over 11 attempts.
PACS_MAX_RETRIES = 10
PACS_BACKOFF_MAX_SECONDS = 3600

TASKS: dict[str, dict[str, Any]] = {
    "worker.tasks.run_study_inference": {
        "queue": INFERENCE,
        **AT_LEAST_ONCE,
        **RETRY_ON_DATABASE_ERRORS,
        "soft_time_limit": 120,
        "time_limit": 180,
    },
    "worker.tasks.deliver_study_webhook": {
        "queue": INFERENCE,
        "acks_late": True,
        "retry_backoff": 30,
        "retry_backoff_max": 3600,
        "retry_jitter": True,
        "max_retries": WEBHOOK_MAX_RETRIES,
        "soft_time_limit": 60,
        "time_limit": 90,
    },
    "worker.tasks.send_pacs_results": {
        "queue": INFERENCE,
        "acks_late": True,
        "max_retries": PACS_MAX_RETRIES,
        "soft_time_limit": 120,
        "time_limit": 180,
    },
    "worker.tasks.reconcile_stuck_studies": {
        "queue": MAINTENANCE,
        "acks_late": True,
        "soft_time_limit": 60,
        "time_limit": 90,
        "ignore_result": True,
    },
    "worker.tasks.sync_directory_accounts": {
        "queue": MAINTENANCE,
        "acks_late": True,
        "soft_time_limit": 240,
        "time_limit": 300,
        "ignore_result": True,
    },
    "worker.tasks.sweep_orphan_files": {
        "queue": MAINTENANCE,
        "acks_late": True,
        "soft_time_limit": 600,
        "time_limit": 660,
        "ignore_result": True,
    },
    "worker.tasks.run_training": {
        "queue": TRAINING,
        **AT_LEAST_ONCE,
        # No autoretry: a failed training is recorded with its error for the admin to read;
        # re-running hours of work automatically would hide the cause.
        "soft_time_limit": settings.TRAINING_SOFT_TIME_LIMIT_SECONDS,
        "time_limit": settings.TRAINING_SOFT_TIME_LIMIT_SECONDS + 300,
        "ignore_result": True,
    },
    "worker.tasks.scheduled_retraining": {"queue": TRAINING, "acks_late": True, "ignore_result": True},
}

ROUTES = {name: {"queue": spec["queue"]} for name, spec in TASKS.items()}


def options(name: str) -> dict[str, Any]:
    """The shared_task keyword arguments of task `name` (its queue goes to ROUTES instead)."""
    return {"name": name, **{key: value for key, value in TASKS[name].items() if key != "queue"}}
