"""Loaded into a test's Celery worker (``CeleryWorker(hold_claimed_studies_s=...)``, through
``--include``): each claimed study is held in `running` that many seconds before it is predicted,
so a chaos test can kill the worker mid-task. The production code has no hook for this."""

from __future__ import annotations

import os
import time
from typing import Any

from celery.signals import worker_ready

HOLD_SECONDS = float(os.environ.get("TEST_HOLD_CLAIMED_STUDIES_S", "0"))


@worker_ready.connect
def _hold_claimed_studies(**_: Any) -> None:
    # After the worker has set Django up; the solo pool runs tasks in this same process.
    from diagnostics.services import inference

    predict = inference.study_batch_predict

    def held(*, studies: list[Any]) -> None:
        time.sleep(HOLD_SECONDS)
        predict(studies=studies)

    if HOLD_SECONDS:
        inference.study_batch_predict = held  # type: ignore[assignment]
