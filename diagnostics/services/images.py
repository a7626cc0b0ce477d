"""Validation and storage of uploaded X-ray files."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import UploadedFile

from diagnostics.models import Image, Study, User
from ml.preprocessing import DecodedImage, ImageDecodeError, decode_image_bytes

logger = logging.getLogger(__name__)

# Smallest side a JPEG is decoded to when an upload is checked (see image_validate_upload).
UPLOAD_CHECK_SIDE = 256


class StorageUnavailable(Exception):
    """The upload could not be written (storage full, read-only or gone); nothing was stored."""

    def __init__(self) -> None:
        super().__init__(
            "The portal cannot store images right now (its storage is full or not writable), so nothing was "
            "stored. Please try again later; the error is in the portal's log."
        )


@dataclass(frozen=True)
class ValidatedUpload:
    filename: str
    data: bytes
    decoded: DecodedImage
    sha256: str
    # Set by the DICOM receiver only: a PACS may send an instance again; uploads may repeat a file freely.
    sop_instance_uid: str = ""


def image_validate_upload(*, filename: str, data: bytes) -> ValidatedUpload:
    """Check that an upload is a readable JPEG, PNG or DICOM image, judged by content.

    Raises ValidationError with a message a clinician can act on; nothing is stored.
    """
    if not data:
        raise ValidationError(f"{filename}: the file is empty.")
    limit = settings.UPLOAD_MAX_BYTES
    if len(data) > limit:
        raise ValidationError(f"{filename}: the file is larger than the {limit // (1024 * 1024)} MB limit.")
    try:
        # Every byte of the file is decoded (a truncated or corrupt file is refused), but a big JPEG
        # only at a reduced DCT scale: the web process needs the check and the size, not the pixels.
        decoded = decode_image_bytes(data, target_size=UPLOAD_CHECK_SIDE)
    except ImageDecodeError as error:
        raise ValidationError(f"{filename}: {error}") from None
    return ValidatedUpload(filename=filename, data=data, decoded=decoded, sha256=hashlib.sha256(data).hexdigest())


def image_store(*, study: Study, upload: ValidatedUpload, user: User) -> Image:
    """Store a validated upload under a random name. Call inside the study's transaction."""
    decoded = upload.decoded
    image = Image(
        study=study,
        original_filename=upload.filename[:255],
        sha256=upload.sha256,
        width=decoded.width,
        height=decoded.height,
        format=decoded.format,
        size_bytes=len(upload.data),
        dicom_metadata=dict(decoded.metadata),
        sop_instance_uid=upload.sop_instance_uid,
        uploaded_by=user,
    )
    try:
        image.file.save("upload", ContentFile(upload.data), save=False)
    except OSError as error:  # the storage removed its partial file (diagnostics/storage.py)
        logger.error("Cannot write an upload to %s: %s", settings.MEDIA_ROOT, error)
        raise StorageUnavailable() from error
    try:
        image.save()
    except Exception:
        image.file.storage.delete(image.file.name)
        raise
    return image


def dicom_study_fields(tags: dict[str, str]) -> dict[str, str]:
    """The study fields one file's DICOM tags give: modality and view position, upper-cased, and only
    values the portal records (a CT file gives no modality; the input gate refuses it later)."""
    fields = {}
    modality = str(tags.get("Modality", "")).strip().upper()
    view = str(tags.get("ViewPosition", "")).strip().upper()
    if modality in Study.Modality.values:
        fields["modality"] = modality
    if view and view in Study.ViewPosition.values:
        fields["view_position"] = view
    return fields


def dicom_study_defaults(*, uploads: Iterable[ValidatedUpload]) -> dict[str, str]:
    """The study fields the uploads' DICOM tags give; the first file that gives a field wins."""
    defaults: dict[str, str] = {}
    for upload in uploads:
        for name, value in dicom_study_fields(upload.decoded.metadata).items():
            defaults.setdefault(name, value)
    return defaults


@dataclass(frozen=True)
class FileCheck:
    """One file of an upload as the validation judged it: accepted (`upload`) or refused (`reason`)."""

    filename: str
    upload: ValidatedUpload | None
    reason: str = ""

    @property
    def message(self) -> str:
        return f"{self.filename}: {self.reason}"


class FilesRefused(ValidationError):
    """At least one file was refused: every refused file's message, and the verdict on each file (in
    the order they came), so a page can say which files were accepted but not stored either."""

    def __init__(self, checks: list[FileCheck]) -> None:
        super().__init__([check.message for check in checks if check.upload is None])
        self.checks = checks


def image_check_files(*, files: Iterable[tuple[str, bytes]]) -> list[FileCheck]:
    """Judge every (name, bytes) file on its own; nothing is stored."""
    checks = []
    for name, data in files:
        filename = name or "upload"
        try:
            checks.append(FileCheck(filename, image_validate_upload(filename=filename, data=data)))
        except ValidationError as error:
            reasons = (message.removeprefix(f"{filename}: ") for message in error.messages)
            checks.append(FileCheck(filename, None, " ".join(reasons)))
    return checks


def image_validate_files(*, files: Iterable[tuple[str, bytes]]) -> list[ValidatedUpload]:
    """Validate every (name, bytes) file before anything is stored; all refusals are reported together
    (FilesRefused, a ValidationError)."""
    checks = image_check_files(files=files)
    uploads = [check.upload for check in checks if check.upload is not None]
    if len(uploads) < len(checks):
        raise FilesRefused(checks)
    return uploads


def image_validate_uploaded_files(*, files: Iterable[UploadedFile]) -> list[ValidatedUpload]:
    """image_validate_files for Django's uploaded files."""
    return image_validate_files(files=((uploaded.name or "upload", uploaded.read()) for uploaded in files))
