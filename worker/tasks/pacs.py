"""AI results back to the PACS a study came from (DICOM SR and Secondary Captures)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from worker.queues import PACS_BACKOFF_MAX_SECONDS, PACS_HEATMAP_POLL_SECONDS, options


@shared_task(bind=True, **options("worker.tasks.send_pacs_results"))
def send_pacs_results(self: Any, study_id: int, waited: float = 0.0) -> None:
    from diagnostics.services.pacs_results import HeatmapsPending, PacsNotDelivered, pacs_send_results

    try:
        pacs_send_results(study_id=study_id, final=self.request.retries >= self.max_retries, waited_seconds=waited)
    except HeatmapsPending:
        poll = PACS_HEATMAP_POLL_SECONDS
        raise self.retry(countdown=poll, kwargs={"study_id": study_id, "waited": waited + poll}) from None
    except PacsNotDelivered as error:
        backoff = min(PACS_BACKOFF_MAX_SECONDS, 30 * 2 ** min(self.request.retries, 10))
        raise self.retry(exc=error, countdown=backoff, kwargs={"study_id": study_id, "waited": waited}) from None
