from __future__ import annotations

from collections.abc import Sequence

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from diagnostics.models import ApiToken, Image, Patient, Prediction, Study, User

from .audit import audit_record
from .images import ValidatedUpload, image_store


def study_create(
    *,
    user: User,
    patient: Patient,
    uploads: Sequence[ValidatedUpload],
    accession_number: str = "",
    modality: str = Study.Modality.CR,
    view_position: str = "",
    callback_url: str = "",
    api_token: ApiToken | None = None,
) -> Study:
    """Create a study with its images and queue it for AI assessment.

    `patient` must come from an access-checked selector. Uploads are validated
    before this is called, so a refused file never leaves a half-stored study.
    """
    if patient.team_id != user.team_id:
        raise PermissionDenied("This patient belongs to another care team.")
    if not uploads:
        raise ValidationError("Attach at least one X-ray image.")
    if callback_url:
        from .webhooks import webhook_url_check

        webhook_url_check(url=callback_url)
    stored: list[Image] = []
    try:
        with transaction.atomic():
            study = _study_create_rows(
                user=user,
                patient=patient,
                uploads=uploads,
                stored=stored,
                accession_number=accession_number,
                modality=modality,
                view_position=view_position,
                callback_url=callback_url,
                api_token=api_token,
            )
    except Exception:
        # The rows rolled back: remove the files written for them, so nothing is half-stored.
        for image in stored:
            image.file.storage.delete(image.file.name)
        raise
    return study


def _study_create_rows(
    *,
    user: User,
    patient: Patient,
    uploads: Sequence[ValidatedUpload],
    stored: list[Image],
    accession_number: str,
    modality: str,
    view_position: str,
    callback_url: str,
    api_token: ApiToken | None,
) -> Study:
    study = Study.objects.create(
        patient=patient,
        accession_number=accession_number.strip(),
        modality=modality,
        view_position=view_position,
        callback_url=callback_url,
        api_token=api_token,
        created_by=user,
    )
    for upload in uploads:
        stored.append(image_store(study=study, upload=upload, user=user))
    audit_record(
        action="study.created",
        actor=user,
        target=study,
        team=patient.team,
        detail={"images": [image.pk for image in stored], "status": study.status},
    )
    study_enqueue_inference(study=study)
    return study


def study_enqueue_inference(*, study: Study) -> None:
    """Send the study to the inference queue once the current transaction commits."""
    from worker.tasks import run_study_inference  # the worker package imports services

    run_study_inference.delay_on_commit(study.pk)


def study_set_status(
    *,
    study: Study,
    status: str,
    reason: str = "",
    actor: User | None = None,
    expected: Sequence[str] | None = None,
) -> bool:
    """Move a study to `status` and record the change.

    With `expected`, the change happens only if the study is still in one of
    those states (a conditional UPDATE), so two workers cannot both claim it.
    Returns whether the row changed.
    """
    rows = Study.objects.filter(pk=study.pk)
    if expected is not None:
        rows = rows.filter(status__in=expected)
    previous = study.status
    changed = rows.update(status=status, failure_reason=reason, status_changed_at=timezone.now()) == 1
    if changed:
        study.status, study.failure_reason = status, reason
        audit_record(
            action="study.status_changed",
            actor=actor,
            target=study,
            team_id=study.patient.team_id,
            detail={"from": previous, "to": status, "reason": reason},
        )
    return changed


def study_finish(*, study: Study, status: str, reason: str = "", expected: Sequence[str] | None = None) -> bool:
    """Move a study to done or failed (see study_set_status) and, once that commits, queue what
    follows: its callback webhook and, for a done study, its heatmaps. Returns whether it changed."""
    if status not in (Study.Status.DONE, Study.Status.FAILED):
        raise ValueError(f"A study finishes as done or failed, not {status!r}.")
    changed = study_set_status(study=study, status=status, reason=reason, expected=expected)
    if changed:
        study_id = study.pk
        transaction.on_commit(lambda: study_queue_follow_ups(study_id=study_id, status=status))
    return changed


def study_queue_follow_ups(*, study_id: int, status: str) -> None:
    """What follows a finished study, queued for the workers (never done inline)."""
    from .heatmaps import heatmap_enqueue_for_study
    from .webhooks import webhook_enqueue_for_study

    webhook_enqueue_for_study(study_id=study_id, status=status)
    if status == Study.Status.DONE:
        heatmap_enqueue_for_study(study_id=study_id)


def study_refresh_latest_result(*, study: Study) -> None:
    """Keep the study's current AI result (the worklist's triage key) in step with its predictions.

    The result is the highest pneumonia probability among the study's images, from the model that
    predicted them last (a later model's results replace an earlier one's), with that image's label:
    a study is suspected when any of its films is. Call it where primary predictions are stored.
    """
    # Films the input gate refused carry no score; the study's result is its scored films' (the
    # study page says how many were not analysable).
    primary = Prediction.objects.filter(
        image__study=study, role=Prediction.Role.PRIMARY, outcome=Prediction.Outcome.SCORED
    )
    newest = primary.order_by("-created_at", "-pk").values("model_version_id").first()
    best = (
        primary.filter(model_version_id=newest["model_version_id"]).order_by("-probability", "-pk").first()
        if newest
        else None
    )
    study.latest_probability = best.probability if best else None
    study.latest_label = best.label if best else None
    Study.objects.filter(pk=study.pk).update(
        latest_probability=study.latest_probability, latest_label=study.latest_label
    )
