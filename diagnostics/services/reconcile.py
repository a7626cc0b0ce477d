"""Finding studies left queued or running (a worker died, a message was lost) and finishing them."""

from __future__ import annotations

import datetime
import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from diagnostics.models import Study

from .studies import study_enqueue_inference, study_finish, study_set_status

logger = logging.getLogger(__name__)


def study_reconcile_stale(
    *, stale_after: datetime.timedelta | None = None, max_attempts: int | None = None
) -> dict[str, int]:
    """Re-enqueue studies stuck in queued/running past the deadline; fail them after max_attempts.

    Safe to run at any time and on several machines: every change is a
    conditional update, and a re-enqueued study is claimed by one worker only.
    """
    if stale_after is None:
        stale_after = datetime.timedelta(seconds=settings.STUDY_STALE_AFTER_SECONDS)
    if max_attempts is None:
        max_attempts = settings.STUDY_MAX_ATTEMPTS
    cutoff = timezone.now() - stale_after
    counts = {"requeued": 0, "failed": 0}
    stale = Study.objects.filter(
        status__in=[Study.Status.QUEUED, Study.Status.RUNNING], status_changed_at__lt=cutoff
    ).select_related("patient")
    for study in stale:
        with transaction.atomic():
            if study.attempts >= max_attempts:
                reason = (
                    f"The AI assessment did not complete after {study.attempts} attempts. "
                    "The image is kept; ask an administrator to check the inference workers, then re-upload."
                )
                if study_finish(study=study, status=Study.Status.FAILED, reason=reason, expected=[study.status]):
                    counts["failed"] += 1
                continue
            reason = (
                "Re-queued: the worker handling it stopped responding."
                if study.status == Study.Status.RUNNING
                else "Re-sent to the inference queue."
            )
            if study_set_status(study=study, status=Study.Status.QUEUED, reason=reason, expected=[study.status]):
                study_enqueue_inference(study=study)
                counts["requeued"] += 1
    if any(counts.values()):
        logger.warning("Reconciled stale studies: %s", counts)
    return counts
