"""Finding studies left queued or running (a worker died, a message was lost) and finishing them."""

from __future__ import annotations

import datetime
import logging

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from diagnostics.models import Study

from .audit import audit_record
from .studies import study_enqueue_inference, study_finish, study_set_status

logger = logging.getLogger(__name__)

# A finished study's webhook or PACS results not started this long after it finished are sent again.
FOLLOW_UP_GRACE_SECONDS = 60


def study_reconcile_stale(
    *, stale_after: datetime.timedelta | None = None, max_attempts: int | None = None
) -> dict[str, int]:
    """Give abandoned studies back to the queue; fail them after max_attempts claims.

    - running, and its worker stopped renewing the lease (it died, or lost the database): re-queued;
    - queued for longer than `stale_after` (STUDY_STALE_AFTER_SECONDS; its message was lost, e.g. a
      broker without persistence restarted): sent again (a duplicate message finds it claimed and
      does nothing).
    With an explicit `stale_after` a running study claimed longer ago than that counts as abandoned
    too, lease or not (tests, and an operator's manual run).

    Safe to run at any time and on several machines: every change is a conditional update, and a
    re-enqueued study is claimed by one worker only.
    """
    explicit = stale_after is not None
    if stale_after is None:
        stale_after = datetime.timedelta(seconds=settings.STUDY_STALE_AFTER_SECONDS)
    if max_attempts is None:
        max_attempts = settings.STUDY_MAX_ATTEMPTS
    now = timezone.now()
    cutoff = now - stale_after
    abandoned = Q(status=Study.Status.RUNNING) & (
        Q(lease_expires_at__lt=now)
        | Q(
            lease_expires_at__isnull=True,
            status_changed_at__lt=now - datetime.timedelta(seconds=settings.STUDY_LEASE_SECONDS),
        )
        | (Q(status_changed_at__lt=cutoff) if explicit else Q(pk__in=[]))
    )
    waiting = Q(status=Study.Status.QUEUED, status_changed_at__lt=cutoff)
    counts = {"requeued": 0, "resent": 0, "failed": 0}
    for study in Study.objects.filter(abandoned | waiting).select_related("patient"):
        with transaction.atomic():
            if study.attempts >= max_attempts:
                reason = (
                    f"The AI assessment did not complete after {study.attempts} attempts. "
                    "The image is kept; ask an administrator to check the inference workers, then re-upload."
                )
                if study_finish(study=study, status=Study.Status.FAILED, reason=reason, expected=[study.status]):
                    counts["failed"] += 1
                continue
            if study.status == Study.Status.RUNNING:
                reason = "Re-queued: the worker handling it stopped responding."
                if study_set_status(study=study, status=Study.Status.QUEUED, reason=reason, expected=[study.status]):
                    study_enqueue_inference(study=study)
                    counts["requeued"] += 1
                continue
            # Still queued: not a change of state, so no status event; the resend itself is recorded.
            if Study.objects.filter(pk=study.pk, status=Study.Status.QUEUED, status_changed_at__lt=cutoff).update(
                status_changed_at=now
            ):
                waited = round((now - study.status_changed_at).total_seconds())
                detail = {"waited_seconds": waited}
                audit_record(action="study.resent", target=study, team_id=study.patient.team_id, detail=detail)
                study_enqueue_inference(study=study)
                counts["resent"] += 1
    if any(counts.values()):
        logger.warning("Reconciled stale studies: %s", counts)
    return counts


def study_reconcile_follow_ups(*, now: datetime.datetime | None = None) -> dict[str, int]:
    """Send again what a finished study owes and has not started: its webhook and its PACS results.

    Their queueing can be lost with the broker (study_queue_follow_ups logs it). A study finished more
    than FOLLOW_UP_GRACE ago with no delivery row is sent again;
    both tasks are idempotent (one WebhookDelivery per study and event, PacsDelivery rows with fixed
    UIDs), so a duplicate changes nothing. Studies older than a day are left alone.
    """
    from diagnostics.integrations.pacs_out.services import pacs_enqueue_results
    from diagnostics.integrations.webhooks.services import webhook_enqueue_for_study

    now = now or timezone.now()
    window = Q(status_changed_at__gte=now - datetime.timedelta(days=1))
    finished = Study.objects.filter(window, status__in=[Study.Status.DONE, Study.Status.FAILED]).select_related(
        "dicom_peer"
    )
    counts = {"webhooks_resent": 0, "pacs_results_resent": 0}
    grace = datetime.timedelta(seconds=FOLLOW_UP_GRACE_SECONDS)
    for study in finished.filter(status_changed_at__lt=now - grace, webhook_deliveries__isnull=True).exclude(
        callback_url=""
    ):
        webhook_enqueue_for_study(study_id=study.pk, status=study.status)
        counts["webhooks_resent"] += 1
    for study in finished.filter(
        status=Study.Status.DONE,
        status_changed_at__lt=now - grace,
        dicom_peer__isnull=False,
        pacs_deliveries__isnull=True,
    ):
        if study.dicom_peer is not None and study.dicom_peer.sends_results:
            pacs_enqueue_results(study_id=study.pk)
            counts["pacs_results_resent"] += 1
    if any(counts.values()):
        logger.warning("Re-sent follow-ups of finished studies: %s", counts)
    return counts
