"""The worker process's start-up: which queues it consumes, and what an inference worker prepares once
before its pool forks and once in each pool process before its first task.

What is prepared belongs to the app that serves the models: diagnostics/tasks/inference.py registers
it here (`on_inference_worker_start`, `on_inference_process_start`). This module only decides when it
runs, so worker/ imports nothing back from the services it starts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.signals import celeryd_after_setup, worker_process_init

from worker.queues import INFERENCE

logger = logging.getLogger(__name__)

Hook = Callable[[], None]
_before_fork: list[Hook] = []
_per_process: list[Hook] = []
_consumed_queues: set[str] = set()


def on_inference_worker_start(hook: Hook) -> Hook:
    """Run `hook` once in an inference worker's parent process, before its pool forks (a hook may take
    minutes: a pool child that takes over 4 s to start is killed). A failing hook is logged; the worker
    starts anyway."""
    _before_fork.append(hook)
    return hook


def on_inference_process_start(hook: Hook) -> Hook:
    """Run `hook` once in each pool process of an inference worker, before its first task (a model
    loaded per process, never per task: TensorFlow or ONNX sessions shared across a fork hang)."""
    _per_process.append(hook)
    return hook


@celeryd_after_setup.connect
def _remember_consumed_queues(sender: object, instance: Any, **_: object) -> None:
    # Before the pool forks: its processes inherit what the worker consumes (-Q).
    selected = instance.app.amqp.queues.consume_from
    _consumed_queues.update(selected.keys() if selected else {INFERENCE})
    if INFERENCE in _consumed_queues:
        _run(_before_fork, swallow=True)


@worker_process_init.connect
def _prepare_process(**_: object) -> None:
    # The training and maintenance workers serve no model and skip it.
    if INFERENCE in _consumed_queues:
        _run(_per_process, swallow=False)


def _run(hooks: list[Hook], *, swallow: bool) -> None:
    from django.db import connections

    try:
        for hook in hooks:
            try:
                hook()
            except Exception:
                if not swallow:
                    raise
                logger.exception("Worker start-up step %s failed; the worker starts anyway", hook.__name__)
    finally:
        connections.close_all()  # forked pool processes must not share the parent's database connection
