from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from diagnostics.models import ApiToken, DicomPeer, Image, Patient, Study, User
from diagnostics.selectors import study_film_results, study_get_with_results, study_result
from diagnostics.selectors.warnings import dicom_header_mismatches, mismatch_sentence

from .audit import audit_record
from .idempotency import idempotency_fingerprint, idempotency_key_record, idempotency_key_validate, idempotency_replay
from .images import (
    DERIVATIVE_SIDE,
    FileCheck,
    FilesRefused,
    ValidatedUpload,
    dicom_study_defaults,
    image_delete_files,
    image_store,
    image_validate_files,
)
from .upload_admission import inference_backlog_check, upload_admission, upload_decode_cost

logger = logging.getLogger(__name__)

# Films in one study, from any channel: every film is decoded to check it, so an unbounded count is
# an unbounded amount of work and memory for one request.
MAX_IMAGES_PER_STUDY = 20


@dataclass(frozen=True)
class AcceptedStudy:
    study: Study
    replayed: bool  # True: an earlier request with the same Idempotency-Key created it


def study_accept(
    *,
    user: User,
    patient: Patient,
    files: Sequence[tuple[str, bytes]],
    fields: dict[str, str | int],
    api_token: ApiToken | None = None,
    idempotency_key: str | None = None,
    uploads: Sequence[ValidatedUpload] | None = None,
    dicom_peer: DicomPeer | None = None,
) -> AcceptedStudy:
    """The one way a study enters the portal, whatever the channel (upload page, API, DICOM).

    `patient` comes from an access-checked selector. `fields` holds accession_number, modality,
    view_position and callback_url, plus whatever identifies the request for its idempotency
    fingerprint (the API's patient_id); modality and view position it lacks come from the files'
    DICOM tags (modality else CR), and study_instance_uid for a study from a PACS (`dicom_peer`, whose
    results go back to it). `uploads`: the files already validated by the caller.
    With an `idempotency_key`, a retry of the same request gets the same study back
    (IdempotencyKeyReused for another request), checked before the files are decoded again.
    """
    if fields.get("callback_url") and api_token is None:
        raise ValidationError(
            {"callback_url": "Webhooks are signed with an API token's secret: authenticate with a token to use one."}
        )
    if dicom_peer is None:  # a PACS's films are acknowledged already: they are never refused here
        inference_backlog_check()
    if len(files) > MAX_IMAGES_PER_STUDY:
        raise ValidationError(
            f"A study takes at most {MAX_IMAGES_PER_STUDY} images ({len(files)} were sent); split them into studies."
        )
    fields = dict(fields)
    if "modality" not in fields or "view_position" not in fields:
        uploads = uploads if uploads is not None else _validate_admitted(user=user, files=files)
        fields = {"modality": Study.Modality.CR, "view_position": "", **dicom_study_defaults(uploads=uploads), **fields}
    key = fingerprint = None
    if idempotency_key is not None:
        key = idempotency_key_validate(key=idempotency_key)
        fingerprint = idempotency_fingerprint(fields=fields, files=files)
        replay = idempotency_replay(user=user, key=key, request_sha256=fingerprint)
        if replay is not None:
            return AcceptedStudy(study=replay.study, replayed=True)
    uploads = uploads if uploads is not None else _validate_admitted(user=user, files=files)
    if dicom_peer is None:  # a PACS's films are acknowledged already: warned about, never refused
        uploads_check_patient(user=user, patient=patient, uploads=uploads)
    written: list[Image] = []
    try:
        with transaction.atomic():
            study = study_create(
                user=user,
                patient=patient,
                uploads=uploads,
                accession_number=str(fields.get("accession_number", "")),
                modality=str(fields["modality"]),
                view_position=str(fields["view_position"]),
                callback_url=str(fields.get("callback_url", "")),
                api_token=api_token,
                study_instance_uid=str(fields.get("study_instance_uid", "")),
                dicom_peer=dicom_peer,
            )
            if key is not None and fingerprint is not None:
                written = list(study.images.all())  # their files go if the key is taken
                idempotency_key_record(user=user, key=key, request_sha256=fingerprint, study=study)
    except IntegrityError:
        # A concurrent request with the same key won and its study stands: this one's rows rolled
        # back, so its files go too, and it answers as a retry of the winner.
        _remove_files(written)
        replay = idempotency_replay(user=user, key=key, request_sha256=fingerprint) if key and fingerprint else None
        if replay is None:
            raise
        return AcceptedStudy(study=replay.study, replayed=True)
    return AcceptedStudy(study=study, replayed=False)


def uploads_check_patient(*, user: User, patient: Patient, uploads: Sequence[ValidatedUpload]) -> None:
    """Where DICOM_PATIENT_MISMATCH is "refuse": refuse uploads of which a DICOM header disagrees with
    `patient`'s record (selectors.warnings.dicom_header_mismatches), saying which fields differ, and
    record the refusal. Raises FilesRefused (a ValidationError) with every file's verdict; nothing is stored."""
    if settings.DICOM_PATIENT_MISMATCH != "refuse":
        return
    checks: list[FileCheck] = []
    fields: list[str] = []
    for upload in uploads:
        mismatches = dicom_header_mismatches(patient=patient, metadata=upload.metadata)
        fields.extend(m.field for m in mismatches if m.field not in fields)
        reason = (
            f"its DICOM header disagrees with the record of {patient.name} ({patient.medical_record_number}): "
            f"{mismatch_sentence(mismatches)}. Nothing was stored: check that you chose the right patient."
        )
        checks.append(FileCheck(upload.filename, None, reason) if mismatches else FileCheck(upload.filename, upload))
    if fields:
        audit_record(
            action="study.refused_patient_mismatch",
            actor=user,
            target=patient,
            team_id=patient.team_id,
            detail={"files": sum(1 for check in checks if check.upload is None), "fields": fields},
        )
        raise FilesRefused(checks)


def _audit_patient_mismatch(*, user: User, study: Study, patient: Patient, images: Sequence[Image]) -> None:
    """Films stored although their DICOM header disagrees with the record: the study carries a
    wrong-patient warning from now on (selectors.warnings), recorded with the fields (no values)."""
    fields: list[str] = []
    mismatched = []
    for image in images:
        mismatches = dicom_header_mismatches(patient=patient, metadata=image.dicom_metadata)
        if mismatches:
            mismatched.append(image.pk)
            fields.extend(m.field for m in mismatches if m.field not in fields)
    if mismatched:
        audit_record(
            action="study.patient_mismatch_warned",
            actor=user,
            target=study,
            team_id=patient.team_id,
            detail={"images": mismatched, "fields": fields},
        )


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
    study_instance_uid: str = "",
    dicom_peer: DicomPeer | None = None,
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
        from diagnostics.integrations.webhooks.services import webhook_url_check

        webhook_url_check(url=callback_url)
    stored: list[Image] = []  # files written so far: removed again if the rows roll back
    try:
        with transaction.atomic():
            study = Study.objects.create(
                patient=patient,
                accession_number=accession_number.strip(),
                modality=modality,
                view_position=view_position,
                callback_url=callback_url,
                api_token=api_token,
                study_instance_uid=study_instance_uid,
                dicom_peer=dicom_peer,
                created_by=user,
            )
            for upload in uploads:
                stored.append(image_store(study=study, upload=upload, user=user))
            audit_record(
                action="study.created",
                actor=user,
                target=study,
                team_id=patient.team_id,
                detail={"images": [image.pk for image in stored], "status": study.status},
            )
            _audit_patient_mismatch(user=user, study=study, patient=patient, images=stored)
            study_enqueue_inference(study=study)
    except Exception:
        _remove_files(stored)
        raise
    return study


def study_add_images(*, study: Study, uploads: Sequence[ValidatedUpload], user: User) -> list[Image]:
    """Add films to an existing study (a PACS sent more of it later) and have the AI assess them.

    A finished study goes back to the queue (recorded); a queued one takes the films as it is; a
    running one finds them when it finishes (services.inference requeues a study with unpredicted films).
    """
    stored: list[Image] = []
    try:
        with transaction.atomic():
            locked = Study.objects.select_for_update().select_related("patient").get(pk=study.pk)
            if locked.images.count() + len(uploads) > MAX_IMAGES_PER_STUDY:
                raise ValidationError(f"A study takes at most {MAX_IMAGES_PER_STUDY} images.")
            for upload in uploads:
                stored.append(image_store(study=locked, upload=upload, user=user))
            audit_record(
                action="study.images_added",
                actor=user,
                target=locked,
                team_id=locked.patient.team_id,
                detail={"images": [image.pk for image in stored]},
            )
            _audit_patient_mismatch(user=user, study=locked, patient=locked.patient, images=stored)
            if locked.status in (Study.Status.DONE, Study.Status.FAILED):
                study_set_status(study=locked, status=Study.Status.QUEUED, reason="", expected=[locked.status])
            if locked.status == Study.Status.QUEUED:
                study_enqueue_inference(study=locked)
    except Exception:
        _remove_files(stored)
        raise
    return stored


def _validate_admitted(*, user: User, files: Sequence[tuple[str, bytes]]) -> list[ValidatedUpload]:
    """image_validate_files within the user's decode budget (UploadsBusy when it is spent)."""
    with upload_admission(user_id=user.pk, cost=upload_decode_cost(files=files, target_size=DERIVATIVE_SIDE)):
        return image_validate_files(files=files)


def _remove_files(images: Sequence[Image]) -> None:
    """The rows rolled back: remove the files written for them, so nothing is half-stored."""
    for image in images:
        image_delete_files(image=image)


def study_enqueue_inference(*, study: Study) -> None:
    """Send the study to the inference queue once the current transaction commits.

    The study row is the outbox: it is saved as `queued` first, so when the broker is down the
    request still succeeds (the study is stored, not lost) and the reconciler re-sends it later.
    """
    study_id = study.pk
    # robust: a failure to queue is logged and left to the reconciler, and the callbacks after it still run.
    transaction.on_commit(lambda: _send_to_inference(study_id), robust=True)


def _send_to_inference(study_id: int) -> None:
    from kombu.exceptions import OperationalError

    from diagnostics.tasks import run_study_inference  # the tasks import the services

    try:
        run_study_inference.delay(study_id)
    except OperationalError:
        logger.warning("Broker unreachable: study %s stays queued; the reconciler will send it", study_id)


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
    follows: its callback webhook and, for a done study from a PACS, its results. Returns whether it changed."""
    if status not in (Study.Status.DONE, Study.Status.FAILED):
        raise ValueError(f"A study finishes as done or failed, not {status!r}.")
    changed = study_set_status(study=study, status=status, reason=reason, expected=expected)
    if changed:
        study_id = study.pk
        transaction.on_commit(lambda: study_queue_follow_ups(study_id=study_id, status=status), robust=True)
    return changed


def study_queue_follow_ups(*, study_id: int, status: str) -> None:
    """What follows a finished study, queued for the workers (never done inline).

    Each is sent on its own: the broker being away loses none of the others, and never fails the
    task that finished the study. The reconciler sends a lost webhook or PACS result again
    (services/reconcile.py: study_reconcile_follow_ups)."""
    from diagnostics.integrations.pacs_out.services import pacs_enqueue_results
    from diagnostics.integrations.webhooks.services import webhook_enqueue_for_study

    _send_follow_up("webhook", study_id, lambda: webhook_enqueue_for_study(study_id=study_id, status=status))
    if status == Study.Status.DONE:
        _send_follow_up("PACS results", study_id, lambda: pacs_enqueue_results(study_id=study_id))


def _send_follow_up(what: str, study_id: int, send: Callable[[], object]) -> None:
    from kombu.exceptions import OperationalError

    try:
        send()
    except OperationalError:
        logger.warning("Broker unreachable: the %s of study %s were not queued", what, study_id)


def study_refresh_latest_result(*, study: Study) -> None:
    """Keep the study's current AI result (the worklist's triage key) in step with its predictions:
    the top film of selectors.study_result, the rule the study page follows too, with its score and
    label (a study is suspected when its most suspicious film is). Call it where primary predictions
    are stored."""
    loaded = study_get_with_results(study_id=study.pk)
    top = study_result(results=study_film_results(study=loaded, heatmaps=False)).top
    prediction = top.prediction if top is not None else None
    study.latest_probability = prediction.probability if prediction is not None else None
    study.latest_label = prediction.label if prediction is not None else None
    Study.objects.filter(pk=study.pk).update(
        latest_probability=study.latest_probability, latest_label=study.latest_label
    )
