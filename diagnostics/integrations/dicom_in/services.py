"""Films from a PACS (C-STORE) or a DICOMweb client (STOW-RS) into the portal, one dataset at a time.

``dicom_ingest`` is the one way a DICOM dataset from a hospital system enters (contract in
docs/integration.md, "dicom_ingest"): it checks the film, and files it in the same transaction as its
study, before the sender is answered. So nothing is acknowledged and then dropped: a film the portal
cannot take raises ``DicomRefused`` with a DICOM failure status and a comment of at most 64 characters
(the C-STORE response's ErrorComment), and a film that returns is in a study whose assessment is queued.
Films are filed as they arrive, grouped into a study by StudyInstanceUID per (care team, peer), and the
study's result (and the SR sent back) follows each new film: nothing waits for the association to end.

Patients are matched by PatientID = medical record number within the sender's care team. A patient the
team does not have yet is registered from the DICOM header (name, birth date, sex; a missing birth date is
recorded as unknown, shown as "age unknown") and audited as such: films from the hospital's own PACS are
for its patients, and refusing them would leave the clinician with nothing to review.

Only radiographs (Modality CR or DX) are taken: a CT, MR or any other object is refused at C-STORE, so
no AI result is ever sent back for what the model was not made for.
"""

from __future__ import annotations

import datetime
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from diagnostics.models import DicomPeer, Image, Patient, Study, User
from diagnostics.services.audit import audit_record
from diagnostics.services.images import ValidatedUpload, image_validate_upload
from diagnostics.services.studies import MAX_IMAGES_PER_STUDY, study_accept, study_add_images
from diagnostics.services.upload_admission import InferenceBacklogFull, inference_backlog_check
from ml.serving.decode import ImageDecodeError, read_dicom_dataset

logger = logging.getLogger(__name__)

REFUSED_DIR = "refused"
# What the model was made for (docs/input-gate.md): chest radiographs.
RADIOGRAPH_MODALITIES = ("CR", "DX")

# C-STORE failure statuses (PS3.4 B.2.3; C001 and C002 are this portal's, in the "cannot understand" range).
CANNOT_UNDERSTAND = 0xC000
STUDY_FULL = 0xC001
SENT_ELSEWHERE = 0xC002
SOP_CLASS_NOT_SUPPORTED = 0x0122
OUT_OF_RESOURCES = 0xA700
COMMENT_LIMIT = 64  # ErrorComment is an LO: 64 characters


class DicomRefused(ValidationError):
    """A dataset the portal does not take; nothing was stored. `status` is the DICOM failure status,
    `comment` a whole sentence of at most 64 characters for the sender, `reason` the full account."""

    def __init__(self, *, status: int, comment: str, reason: str = "") -> None:
        if len(comment) > COMMENT_LIMIT:
            raise ValueError(f"ErrorComment over {COMMENT_LIMIT} characters: {comment!r}")
        self.status = status
        self.comment = comment
        self.reason = reason or comment
        super().__init__(self.reason)


@dataclass(frozen=True)
class DicomHeader:
    sop_instance_uid: str
    study_instance_uid: str
    patient_id: str
    patient_name: str
    birth_date: datetime.date | None
    sex: str
    accession_number: str
    modality: str


@dataclass(frozen=True)
class DicomIngested:
    """What dicom_ingest did: `image` the new film in `study`, or `duplicate` (that instance was filed already)."""

    study: Study
    image: Image | None
    duplicate: bool = False


def dicom_header_read(data: bytes) -> DicomHeader:
    """The identifiers the ingest needs, from a DICOM file's header (pixels are not read)."""
    from pydicom.errors import InvalidDicomError

    try:  # a deflated dataset is inflated within a cap (ml.serving.decode.read_dicom_dataset)
        ds = read_dicom_dataset(data, stop_before_pixels=True)
    except ImageDecodeError as error:
        raise DicomRefused(status=CANNOT_UNDERSTAND, comment="The deflated dataset is corrupt or too large.",
                           reason=str(error)) from None  # fmt: skip
    except (InvalidDicomError, ValueError, EOFError, OSError) as error:
        raise DicomRefused(
            status=CANNOT_UNDERSTAND, comment="Not a readable DICOM file.", reason=f"Not a readable DICOM file: {error}"
        ) from None
    birth = str(ds.get("PatientBirthDate", "") or "").strip()
    try:
        birth_date = datetime.datetime.strptime(birth, "%Y%m%d").date() if birth else None
    except ValueError:
        birth_date = None
    sex = str(ds.get("PatientSex", "") or "").upper()
    return DicomHeader(
        sop_instance_uid=str(ds.get("SOPInstanceUID", "") or "").strip(),
        study_instance_uid=str(ds.get("StudyInstanceUID", "") or "").strip(),
        patient_id=str(ds.get("PatientID", "") or "").strip(),
        patient_name=str(ds.get("PatientName", "") or "").replace("^", " ").strip(),
        birth_date=birth_date if birth_date is None or birth_date <= datetime.date.today() else None,
        sex=sex if sex in Patient.Sex.values else Patient.Sex.UNKNOWN,
        accession_number=str(ds.get("AccessionNumber", "") or "")[:64],
        modality=str(ds.get("Modality", "") or "").strip().upper(),
    )


def pacs_peer_for(*, ae_title: str) -> DicomPeer | None:
    """The enabled peer calling as `ae_title` (AE titles are compared without padding)."""
    return (
        DicomPeer.objects.select_related("team", "service_user").filter(ae_title=ae_title.strip(), enabled=True).first()
    )


def dicom_ingest(*, data: bytes, user: User, peer: DicomPeer | None = None) -> DicomIngested:
    """File one DICOM Part 10 dataset for `user`'s care team, from `peer` (whose results go back) or None.

    Commits before it returns and queues the study's assessment; DicomRefused (nothing stored) when the
    film is not taken. Call it outside a transaction. Contract: docs/integration.md, "dicom_ingest"."""
    try:
        return _ingest(data=data, user=user, peer=peer)
    except DicomRefused as refused:
        audit_record(
            action="dicom.instance_refused",
            actor=user,
            team_id=user.team_id,
            detail={
                "peer": peer.ae_title if peer else "",
                "status": f"0x{refused.status:04X}",
                "reason": refused.reason[:500],
            },  # fmt: skip
        )
        logger.info("DICOM instance from %s refused: %s", peer.ae_title if peer else user, refused.reason)
        raise


def _ingest(*, data: bytes, user: User, peer: DicomPeer | None) -> DicomIngested:
    if user.team_id is None:
        raise ValueError("dicom_ingest needs a user with a care team")
    limit = settings.DICOM_MAX_DATASET_BYTES
    if len(data) > limit:
        raise DicomRefused(status=OUT_OF_RESOURCES, comment=f"The film is over the {limit // 2**20} MB limit.")
    header = dicom_header_read(data)
    missing = [
        name
        for name, value in (
            ("SOPInstanceUID", header.sop_instance_uid),
            ("StudyInstanceUID", header.study_instance_uid),
            ("PatientID", header.patient_id),
        )
        if not value
    ]
    if missing:
        raise DicomRefused(status=CANNOT_UNDERSTAND, comment=_fit(f"No {', '.join(missing)}: cannot be filed.",
                                                                   "A required identifier is missing."))  # fmt: skip
    if header.modality not in RADIOGRAPH_MODALITIES:
        shown = re.sub(r"[^A-Z0-9]", "", header.modality)[:16] or "No modality"
        raise DicomRefused(
            status=SOP_CLASS_NOT_SUPPORTED,
            comment=f"{shown}: the AI reads chest radiographs (CR, DX) only.",
            reason=f"Modality {header.modality or '(none)'} is not a radiograph; the AI reads CR and DX films only.",
        )
    filed = Image.objects.filter(sop_instance_uid=header.sop_instance_uid).select_related("study__patient").first()
    if filed is not None:
        return _already_filed(filed=filed, user=user, peer=peer)
    _check_room(user=user, peer=peer, study_uid=header.study_instance_uid, adding=0)
    try:
        inference_backlog_check()
    except InferenceBacklogFull as error:
        raise DicomRefused(status=OUT_OF_RESOURCES, comment="The AI queue is full: send again later.",
                           reason=str(error)) from None  # fmt: skip
    try:
        upload = image_validate_upload(filename=f"{header.sop_instance_uid}.dcm", data=data)
    except ValidationError as error:
        reason = "; ".join(error.messages)
        raise DicomRefused(status=CANNOT_UNDERSTAND, comment=_fit(reason, "The image cannot be read or is too large."),
                           reason=reason) from None  # fmt: skip
    upload = replace(upload, sop_instance_uid=header.sop_instance_uid)
    for _attempt in range(3):
        try:
            return _file(header=header, upload=upload, user=user, peer=peer)
        except DicomRefused:
            raise
        except ValidationError as error:  # the study's own rules (services.studies), checked under its lock
            reason = "; ".join(error.messages)
            status = STUDY_FULL if "at most" in reason else CANNOT_UNDERSTAND
            raise DicomRefused(status=status, comment=_fit(reason, "The portal's study rules refuse this film."),
                               reason=reason) from None  # fmt: skip
        except IntegrityError:
            # Another association filed this patient, study or film at the same moment: look again.
            logger.info("DICOM study %s was filed concurrently; trying again", header.study_instance_uid)
            filed = Image.objects.filter(sop_instance_uid=header.sop_instance_uid).first()
            if filed is not None:
                return _already_filed(filed=filed, user=user, peer=peer)
    raise DicomRefused(status=OUT_OF_RESOURCES, comment="The portal could not file it now: send again.",
                       reason=f"Study {header.study_instance_uid} kept colliding with concurrent filings.")  # fmt: skip


def _already_filed(*, filed: Image, user: User, peer: DicomPeer | None) -> DicomIngested:
    study = filed.study
    if study.patient.team_id != user.team_id:
        raise DicomRefused(status=SENT_ELSEWHERE, comment="This SOP Instance UID is filed by another sender.")
    detail = {"peer": peer.ae_title if peer else "", "study_instance_uid": study.study_instance_uid}
    audit_record(action="dicom.instances_resent", actor=user, target=study, team_id=user.team_id, detail=detail)
    return DicomIngested(study=study, image=None, duplicate=True)


def _study_for(*, user: User, peer: DicomPeer | None, study_uid: str) -> Study | None:
    return Study.objects.filter(patient__team_id=user.team_id, dicom_peer=peer, study_instance_uid=study_uid).first()


def _check_room(*, user: User, peer: DicomPeer | None, study_uid: str, adding: int) -> None:
    study = _study_for(user=user, peer=peer, study_uid=study_uid)
    if study is not None and study.images.count() + adding >= MAX_IMAGES_PER_STUDY:
        raise DicomRefused(
            status=STUDY_FULL,
            comment=f"The study has {MAX_IMAGES_PER_STUDY} films, the most it takes.",
            reason=f"Study {study.pk} ({study_uid}) holds {MAX_IMAGES_PER_STUDY} films already, the most it takes.",
        )


def _file(*, header: DicomHeader, upload: ValidatedUpload, user: User, peer: DicomPeer | None) -> DicomIngested:
    with transaction.atomic():
        patient = _patient_locked(header=header, user=user, peer=peer)  # serialises filings for this patient
        _check_room(user=user, peer=peer, study_uid=header.study_instance_uid, adding=0)
        study = _study_for(user=user, peer=peer, study_uid=header.study_instance_uid)
        if study is not None:
            [image] = study_add_images(study=study, uploads=[upload], user=user)
            return DicomIngested(study=study, image=image)
        accepted = study_accept(
            user=user,
            patient=patient,
            files=[(upload.filename, upload.data)],
            uploads=[upload],
            fields={
                "accession_number": header.accession_number,
                "study_instance_uid": header.study_instance_uid,
                "modality": header.modality,
                "view_position": _view(upload.metadata),
            },  # fmt: skip
            dicom_peer=peer,
        )
        audit_record(
            action="dicom.study_received",
            actor=user,
            target=accepted.study,
            team_id=user.team_id,
            detail={"peer": peer.ae_title if peer else "", "modality": header.modality},
        )
        return DicomIngested(study=accepted.study, image=accepted.study.images.get())


def _view(metadata: dict[str, str]) -> str:
    view = str(metadata.get("ViewPosition", "")).strip().upper()
    return view if view in Study.ViewPosition.values else ""


def _patient_locked(*, header: DicomHeader, user: User, peer: DicomPeer | None) -> Patient:
    found = Patient.objects.select_for_update().filter(team_id=user.team_id, medical_record_number=header.patient_id)
    patient = found.first()
    if patient is not None:
        return patient
    team_id = user.team_id
    assert team_id is not None  # dicom_ingest checked
    patient = Patient.objects.create(
        team_id=team_id,
        medical_record_number=header.patient_id,
        name=header.patient_name or f"Patient {header.patient_id}",
        birth_date=header.birth_date,  # None: unknown, shown as "age unknown"
        sex=header.sex,
        created_by=user,
    )
    audit_record(
        action="patient.created_from_dicom",
        actor=user,
        target=patient,
        team_id=user.team_id,
        detail={"peer": peer.ae_title if peer else "", "birth_date_known": header.birth_date is not None},
    )
    return patient


def _fit(sentence: str, fallback: str) -> str:
    """`sentence`'s first sentence when it fits an ErrorComment whole, else `fallback`: never cut mid-sentence."""
    first = re.split(r"(?<=[.;])\s", sentence.strip(), maxsplit=1)[0].rstrip(";")
    first = first if first.endswith(".") else f"{first}."
    return first if len(first) <= COMMENT_LIMIT else fallback


def pacs_inbox_dir() -> Path:
    return Path(settings.DICOM_INBOX_DIR)


def pacs_ingest_leftovers() -> int:
    """At receiver start: file what an older receiver left in DICOM_INBOX_DIR (it acknowledged films
    first and filed them when the association ended). Folders are named '<peer id>-<association id>'.
    A film that cannot be filed is moved to refused/ with its reason and audited, never deleted.
    Returns the number of films filed."""
    count = 0
    root = pacs_inbox_dir()
    if not root.is_dir():
        return 0
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name != REFUSED_DIR):
        peer_id = folder.name.split("-", 1)[0]
        peer = DicomPeer.objects.select_related("team", "service_user").filter(pk=peer_id).first()
        if peer is None:
            logger.error("Inbox folder %s names no known DICOM peer; left in place", folder)
            continue
        for path in sorted(folder.glob("*.dcm")):
            try:
                ingested = dicom_ingest(data=path.read_bytes(), user=peer.service_user, peer=peer)
            except DicomRefused as refused:
                _refuse(peer=peer, path=path, reason=refused.reason)
                continue
            count += not ingested.duplicate
            path.unlink()
        for leftover in folder.glob("*.part"):  # a write the old receiver never acknowledged
            leftover.unlink()
        if not any(folder.iterdir()):
            folder.rmdir()
    return count


def _refuse(*, peer: DicomPeer, path: Path, reason: str) -> None:
    """An acknowledged film the portal cannot file: moved aside with its reason, never deleted."""
    target = pacs_inbox_dir() / REFUSED_DIR
    target.mkdir(parents=True, exist_ok=True)
    moved = target / path.name
    path.rename(moved)
    moved.with_suffix(".txt").write_text(f"peer {peer.ae_title}: {reason}\n", encoding="utf-8")
    logger.warning("DICOM film from %s kept in %s: %s", peer.ae_title, moved, reason)
