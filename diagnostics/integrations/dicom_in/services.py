"""Films from a PACS over DICOM: checked at C-STORE, kept in an inbox, then accepted as studies.

The receiver (diagnostics/management/commands/dicom_receiver.py) calls these:

1. ``pacs_check_instance`` while the C-STORE is open, so a film the portal cannot take is refused to
   the sender with a reason (the PACS shows the failure and keeps the film), never dropped later;
2. ``pacs_inbox_write`` to keep an accepted film durably before the C-STORE is acknowledged;
3. ``pacs_ingest_inbox`` when the association ends (and at receiver start, for anything a crash left):
   the association's films, grouped by StudyInstanceUID, go through ``study_accept`` like an upload
   (same validation, care-team rules, input gate and audit), or join the team's existing study of that
   UID. Files leave the inbox only once their rows are committed.

Patients are matched by PatientID = medical record number within the peer's care team. A patient the
team does not have yet is registered from the DICOM header (name, birth date, sex) and audited as such:
films from the hospital's own PACS are for its patients, and refusing them would leave the clinician
with nothing to review. A film without PatientID, or for an unknown patient without a birth date, is
refused at C-STORE.
"""

from __future__ import annotations

import datetime
import io
import logging
import os
import uuid
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from diagnostics.models import DicomPeer, Image, Patient, Study
from diagnostics.services.audit import audit_record
from diagnostics.services.images import ValidatedUpload, image_validate_upload
from diagnostics.services.studies import study_accept, study_add_images

logger = logging.getLogger(__name__)

REFUSED_DIR = "refused"


@dataclass(frozen=True)
class DicomHeader:
    sop_instance_uid: str
    study_instance_uid: str
    patient_id: str
    patient_name: str
    birth_date: datetime.date | None
    sex: str
    accession_number: str


def dicom_header_read(data: bytes) -> DicomHeader:
    """The identifiers the ingest needs, from a DICOM file's header (pixels are not read)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except (InvalidDicomError, ValueError, EOFError) as error:
        raise ValidationError(f"Not a readable DICOM file: {error}") from None
    birth = str(ds.get("PatientBirthDate", "") or "")
    try:
        birth_date = datetime.datetime.strptime(birth, "%Y%m%d").date() if birth else None
    except ValueError:
        birth_date = None
    sex = str(ds.get("PatientSex", "") or "").upper()
    return DicomHeader(
        sop_instance_uid=str(ds.get("SOPInstanceUID", "") or ""),
        study_instance_uid=str(ds.get("StudyInstanceUID", "") or ""),
        patient_id=str(ds.get("PatientID", "") or "").strip(),
        patient_name=str(ds.get("PatientName", "") or "").replace("^", " ").strip(),
        birth_date=birth_date,
        sex=sex if sex in Patient.Sex.values else Patient.Sex.UNKNOWN,
        accession_number=str(ds.get("AccessionNumber", "") or "")[:64],
    )


def pacs_peer_for(*, ae_title: str) -> DicomPeer | None:
    """The enabled peer calling as `ae_title` (AE titles are compared without padding)."""
    return (
        DicomPeer.objects.select_related("team", "service_user").filter(ae_title=ae_title.strip(), enabled=True).first()
    )


@dataclass(frozen=True)
class CheckedFilm:
    header: DicomHeader
    upload: ValidatedUpload  # decoded once, with its SOP Instance UID


def pacs_check_instance(*, peer: DicomPeer, data: bytes) -> CheckedFilm:
    """Everything the portal needs to accept this film; ValidationError with the reason if not.

    The pixel data is decoded here too (image_validate_upload): a film that cannot be read is refused
    while the sender can still be told."""
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
        raise ValidationError(f"The film has no {', '.join(missing)}: the portal cannot file it.")
    known = Patient.objects.filter(team=peer.team, medical_record_number=header.patient_id).exists()
    if not known and header.birth_date is None:
        raise ValidationError(
            f"Patient {header.patient_id} is not registered in {peer.team} and the film has no "
            "PatientBirthDate to register them with."
        )
    upload = image_validate_upload(filename=f"{header.sop_instance_uid}.dcm", data=data)
    return CheckedFilm(header, replace(upload, sop_instance_uid=header.sop_instance_uid))


def pacs_inbox_dir() -> Path:
    return Path(settings.DICOM_INBOX_DIR)


def pacs_inbox_write(*, association: str, data: bytes) -> Path:
    """Keep an accepted film on disk (written, flushed, then renamed) before it is acknowledged."""
    folder = pacs_inbox_dir() / association
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{uuid.uuid4().hex}.dcm"  # not the UID: file names must not carry identifiers
    partial = final.with_suffix(".part")
    with open(partial, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    partial.rename(final)
    return final


@dataclass(frozen=True)
class _InboxFilm:
    path: Path
    header: DicomHeader
    upload: ValidatedUpload


def pacs_ingest_inbox(*, peer: DicomPeer, association: str) -> list[Study]:
    """Accept an association's films as studies, one per StudyInstanceUID; empty the folder."""
    folder = pacs_inbox_dir() / association
    films: list[_InboxFilm] = []
    for path in sorted(folder.glob("*.dcm")):
        data = path.read_bytes()
        try:
            checked = pacs_check_instance(peer=peer, data=data)
        except ValidationError as error:  # acknowledged, then unreadable: keep it for an admin
            _refuse(peer=peer, path=path, reason="; ".join(error.messages))
            continue
        films.append(_InboxFilm(path, checked.header, checked.upload))
    by_study: dict[str, list[_InboxFilm]] = defaultdict(list)
    for film in films:
        by_study[film.header.study_instance_uid].append(film)
    studies = []
    for study_uid, group in by_study.items():
        study = _ingest_study(peer=peer, study_uid=study_uid, films=group)
        if study is not None:
            studies.append(study)
    for leftover in folder.glob("*.part"):  # a write the receiver never acknowledged
        leftover.unlink()
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    return studies


def pacs_ingest_leftovers(*, peer_for_association: dict[str, DicomPeer] | None = None) -> int:
    """At receiver start: ingest what a crash left in the inbox. Folders are named
    '<peer id>-<association id>', so each one's peer is known."""
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
        count += len(pacs_ingest_inbox(peer=peer, association=folder.name))
    return count


def pacs_association_folder(*, peer: DicomPeer) -> str:
    return f"{peer.pk}-{uuid.uuid4().hex}"


def _ingest_study(*, peer: DicomPeer, study_uid: str, films: list[_InboxFilm]) -> Study | None:
    study: Study | None = None
    for _attempt in range(3):
        already = set(
            Image.objects.filter(sop_instance_uid__in=[f.header.sop_instance_uid for f in films]).values_list(
                "sop_instance_uid", flat=True
            )
        )
        if already:
            audit_record(
                action="dicom.instances_resent",
                team_id=peer.team_id,
                detail={"peer": peer.ae_title, "instances": len(already), "study_instance_uid": study_uid},
            )
        new = [f for f in films if f.header.sop_instance_uid not in already]
        if not new:
            break
        try:
            study = _store(peer=peer, study_uid=study_uid, films=new)
            break
        except IntegrityError:
            # Another association filed this study or one of these films at the same moment: look
            # again, and the films join that study (or are found already filed).
            logger.info("DICOM study %s was filed concurrently; trying again", study_uid)
        except ValidationError as error:
            for film in new:
                _refuse(peer=peer, path=film.path, reason="; ".join(error.messages))
            return None
    else:
        logger.error("DICOM study %s could not be filed; its films stay in the inbox", study_uid)
        return None
    for film in films:
        film.path.unlink(missing_ok=True)
    return study


def _store(*, peer: DicomPeer, study_uid: str, films: list[_InboxFilm]) -> Study:
    first = films[0].header
    with transaction.atomic():
        patient = _patient_for(peer=peer, header=first)
        existing = Study.objects.filter(dicom_peer=peer, study_instance_uid=study_uid).first()
        if existing is not None:
            study_add_images(study=existing, uploads=[f.upload for f in films], user=peer.service_user)
            return existing
        accepted = study_accept(
            user=peer.service_user,
            patient=patient,
            files=[(f.upload.filename, f.upload.data) for f in films],
            uploads=[f.upload for f in films],
            fields={"accession_number": first.accession_number, "study_instance_uid": study_uid},
            dicom_peer=peer,
        )
        audit_record(
            action="dicom.study_received",
            actor=peer.service_user,
            target=accepted.study,
            team_id=peer.team_id,
            detail={"peer": peer.ae_title, "instances": len(films)},
        )
        return accepted.study


def _patient_for(*, peer: DicomPeer, header: DicomHeader) -> Patient:
    patient = Patient.objects.filter(team=peer.team, medical_record_number=header.patient_id).first()
    if patient is not None:
        return patient
    assert header.birth_date is not None  # pacs_check_instance refused it otherwise
    patient = Patient.objects.create(
        team=peer.team,
        medical_record_number=header.patient_id,
        name=header.patient_name or f"Patient {header.patient_id}",
        birth_date=header.birth_date,
        sex=header.sex,
        created_by=peer.service_user,
    )
    audit_record(
        action="patient.created_from_dicom",
        actor=peer.service_user,
        target=patient,
        team_id=peer.team_id,
        detail={"peer": peer.ae_title},
    )
    return patient


def _refuse(*, peer: DicomPeer, path: Path, reason: str) -> None:
    """An acknowledged film the portal cannot file: moved aside with its reason, audited, never deleted."""
    target = pacs_inbox_dir() / REFUSED_DIR
    target.mkdir(parents=True, exist_ok=True)
    moved = target / path.name
    path.rename(moved)
    moved.with_suffix(".txt").write_text(f"peer {peer.ae_title}: {reason}\n", encoding="utf-8")
    audit_record(
        action="dicom.instance_refused",
        team_id=peer.team_id,
        detail={"peer": peer.ae_title, "file": str(moved), "reason": reason[:500]},
    )
    logger.warning("DICOM film from %s kept in %s: %s", peer.ae_title, moved, reason)
