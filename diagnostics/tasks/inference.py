"""The inference task, and what an inference worker prepares at start (run by worker/startup.py)."""

from __future__ import annotations

from celery import shared_task

from worker.queues import options
from worker.startup import on_inference_process_start, on_inference_worker_start


@shared_task(**options("worker.tasks.run_study_inference"))
def run_study_inference(study_id: int) -> None:
    from diagnostics.services.inference import study_run_inference

    study_run_inference(study_id=study_id)


@on_inference_worker_start
def prepare_serving_variants() -> None:
    # In the parent and once, not per pool process: measuring the variants takes a minute; a failure
    # leaves the children serving fp32.
    from diagnostics.services.inference import serving_variants_prepare

    serving_variants_prepare()


@on_inference_process_start
def load_serving_models() -> None:
    from diagnostics.services.inference import preload_serving_models

    preload_serving_models()
