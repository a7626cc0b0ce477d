"""Training tasks: run on the `training` queue by a worker that may import TensorFlow."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings


@shared_task(
    name="worker.tasks.run_training",
    acks_late=True,
    reject_on_worker_lost=True,
    # No autoretry: a failed training is recorded with its error for the admin to
    # read; re-running hours of work automatically would hide the cause.
    soft_time_limit=settings.TRAINING_SOFT_TIME_LIMIT_SECONDS,
    time_limit=settings.TRAINING_SOFT_TIME_LIMIT_SECONDS + 300,
    ignore_result=True,
)
def run_training(run_id: int) -> None:
    from diagnostics.services.training import training_run_execute

    training_run_execute(run_id=run_id)


@shared_task(name="worker.tasks.scheduled_retraining", acks_late=True, ignore_result=True)
def scheduled_retraining(architecture: str, config: dict | None = None) -> int:
    """Started by an admin-editable beat schedule (django-celery-beat); off by default."""
    from diagnostics.services.training import training_run_start

    return training_run_start(actor=None, architecture=architecture, config=config or {}, trigger="schedule").pk
