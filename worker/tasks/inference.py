"""Celery tasks: each takes ids, loads nothing itself and calls one service."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.signals import celeryd_after_setup, worker_process_init

from worker.queues import INFERENCE, options


@shared_task(**options("worker.tasks.run_study_inference"))
def run_study_inference(study_id: int) -> None:
    from diagnostics.services.inference import study_run_inference

    study_run_inference(study_id=study_id)


_consumed_queues: set[str] = set()


@celeryd_after_setup.connect
def _remember_consumed_queues(sender: object, instance: Any, **_: object) -> None:
    # Before the pool forks: its processes inherit what the worker consumes (-Q).
    selected = instance.app.amqp.queues.consume_from
    _consumed_queues.update(selected.keys() if selected else {INFERENCE})
    if INFERENCE in _consumed_queues:
        _prepare_serving_variants()


def _prepare_serving_variants() -> None:
    # Here, in the parent and once, not in worker_process_init: a child that takes more than
    # worker_proc_alive_timeout (4 s) to start is killed, and measuring the variants takes a minute.
    import logging

    from django.db import connections

    from diagnostics.services.inference import serving_variants_prepare

    try:
        serving_variants_prepare()
    except Exception:  # the worker must start anyway; its children then serve fp32
        logging.getLogger(__name__).exception("Could not prepare the serving variants; serving fp32")
    finally:
        connections.close_all()  # the pool's children must not inherit this connection


@worker_process_init.connect
def _load_model_once_per_process(**_: object) -> None:
    # Each inference worker process loads the ONNX model before its first task, not per task;
    # the training and maintenance workers serve no ONNX model and skip it.
    if INFERENCE not in _consumed_queues:
        return
    from django.db import connections

    from diagnostics.services.inference import preload_serving_models

    preload_serving_models()
    # Forked children must not share the parent's database connection.
    connections.close_all()
