"""Celery tasks: each takes ids, loads nothing itself and calls one service."""

from __future__ import annotations

from celery import shared_task
from celery.signals import worker_process_init

from .options import RETRY_ON_DATABASE_ERRORS


@shared_task(
    name="worker.tasks.run_study_inference",
    acks_late=True,
    reject_on_worker_lost=True,
    **RETRY_ON_DATABASE_ERRORS,
    soft_time_limit=120,
    time_limit=180,
)
def run_study_inference(study_id: int) -> None:
    from diagnostics.services.inference import study_run_inference

    study_run_inference(study_id=study_id)


@worker_process_init.connect
def _load_model_once_per_process(**_: object) -> None:
    # Each worker process loads the ONNX model before its first task, not per task.
    from django.db import connections

    from diagnostics.services.inference import preload_serving_models

    preload_serving_models()
    # Forked children must not share the parent's database connection.
    connections.close_all()
