"""Loaded into a test's Celery worker (``CeleryWorker(hold_claimed_studies_s=...)``, through
``--include``): each claimed study is held in `running` that many seconds before it is predicted,
so a chaos test can kill the worker mid-task. The production code has no hook for this."""

from __future__ import annotations

import os
import time
from typing import Any

from celery.signals import worker_process_init, worker_ready

HOLD_SECONDS = float(os.environ.get("TEST_HOLD_CLAIMED_STUDIES_S", "0"))


@worker_ready.connect
@worker_process_init.connect
def _hold_claimed_studies(**_: Any) -> None:
    # After the worker has set Django up: in the worker's own process (the solo pool runs tasks there)
    # and in each prefork pool process.
    from diagnostics.services import inference

    predict = inference.study_batch_predict

    def held(*, studies: list[Any]) -> None:
        time.sleep(HOLD_SECONDS)
        predict(studies=studies)

    if HOLD_SECONDS and not getattr(predict, "held", False):  # a pool process forked after the parent held it
        held.held = True  # type: ignore[attr-defined]
        inference.study_batch_predict = held  # type: ignore[assignment]
