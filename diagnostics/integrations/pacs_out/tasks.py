"""AI results back to the PACS a study came from (DICOM SR and Secondary Captures)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from worker.queues import PACS_BACKOFF_MAX_SECONDS, options


@shared_task(bind=True, **options("worker.tasks.send_pacs_results"))
def send_pacs_results(self: Any, study_id: int, waited: float = 0.0) -> None:
    """`waited` is ignored: retries queued before heatmaps came with the prediction still carry it."""
    from diagnostics.integrations.pacs_out.services import PacsNotDelivered, pacs_send_results

    try:
        pacs_send_results(study_id=study_id, final=self.request.retries >= self.max_retries)
    except PacsNotDelivered as error:
        backoff = min(PACS_BACKOFF_MAX_SECONDS, 30 * 2 ** min(self.request.retries, 10))
        raise self.retry(exc=error, countdown=backoff) from None
