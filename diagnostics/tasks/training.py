"""Training tasks: run on the `training` queue by a worker that may import TensorFlow."""

from __future__ import annotations

from celery import shared_task

from worker.queues import options


@shared_task(**options("worker.tasks.run_training"))
def run_training(run_id: int) -> None:
    from diagnostics.services.training import training_run_execute

    training_run_execute(run_id=run_id)


@shared_task(**options("worker.tasks.scheduled_retraining"))
def scheduled_retraining(architecture: str, config: dict | None = None) -> int:
    """Started by an admin-editable beat schedule (django-celery-beat); off by default."""
    from diagnostics.services.training import training_run_start

    return training_run_start(actor=None, architecture=architecture, config=config or {}, trigger="schedule").pk
