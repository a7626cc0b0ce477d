"""Validation and storage of uploaded X-ray files."""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import UploadedFile
from PIL import Image as PILImage

from diagnostics.models import Image, Study, User
from diagnostics.selectors.warnings import IDENTITY_TAGS
from ml.serving.decode import DecodedImage, ImageDecodeError, decode_image_bytes, read_dicom_dataset

from .stored_files import file_remove_on_rollback

logger = logging.getLogger(__name__)

# Largest side of the derivatives kept for people (the preview, the PDF, PACS captures, window/level): a
# big JPEG is also decoded at a reduced DCT scale no smaller than this when it is checked.
DERIVATIVE_SIDE = 1024
PREVIEW_JPEG_QUALITY = 95


class StorageUnavailable(Exception):
    """The upload could not be written (storage full, read-only or gone); nothing was stored."""

    def __init__(self) -> None:
        super().__init__(
            "The portal cannot store images right now (its storage is full or not writable), so nothing was "
            "stored. Please try again later; the error is in the portal's log."
        )


@dataclass(frozen=True)
class FilmDerivatives:
    """What people see of a film, made from the one decode that checks it (see Image.preview)."""

    preview_jpeg: bytes  # 8-bit grayscale, display orientation, the file's own window
    window_source_png: bytes = b""  # grayscale DICOM only: 16-bit, for window/level


@dataclass(frozen=True)
class ValidatedUpload:
    """A file that decoded as a film. The decoded pixels are not kept (twenty full-size films would be
    gigabytes in one request): only what the row needs, and the derivatives, at most DERIVATIVE_SIDE."""

    filename: str
    data: bytes
    sha256: str
    format: str
    width: int
    height: int
    metadata: dict[str, str]
    derivatives: FilmDerivatives
    # Set by the DICOM receiver only: a PACS may send an instance again; uploads may repeat a file freely.
    sop_instance_uid: str = ""


def image_validate_upload(*, filename: str, data: bytes) -> ValidatedUpload:
    """Check that an upload is a readable JPEG, PNG or DICOM image, judged by content, and make its
    derivatives from that same decode.

    Raises ValidationError with a message a clinician can act on; nothing is stored.
    """
    if not data:
        raise ValidationError(f"{filename}: the file is empty.")
    limit = settings.UPLOAD_MAX_BYTES
    if len(data) > limit:
        raise ValidationError(f"{filename}: the file is larger than the {limit // (1024 * 1024)} MB limit.")
    try:
        # Every byte of the file is decoded (a truncated or corrupt file is refused), a big JPEG at the
        # reduced DCT scale the derivatives need. The model never reads these pixels: the inference worker
        # decodes the original the way training did (ml.serving.preprocessing.load_for_model).
        decoded = _decode_for_derivatives(data)
    except ImageDecodeError as error:
        raise ValidationError(f"{filename}: {error}") from None
    return ValidatedUpload(
        filename=filename,
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        format=decoded.format,
        width=decoded.width,
        height=decoded.height,
        metadata={**decoded.metadata, **(dicom_identity_tags(data) if decoded.format == Image.Format.DICOM else {})},
        derivatives=film_derivatives(decoded),
    )


def dicom_identity_tags(data: bytes) -> dict[str, str]:
    """The patient's identity as a DICOM file's header gives it (IDENTITY_TAGS: ID, name, birth date, sex),
    kept with the film so that it can be compared with the record it is filed under
    (selectors.warnings); header only, no pixel is read (a deflated file inflated within its cap). Empty for a
    file pydicom cannot read."""
    from pydicom.errors import InvalidDicomError

    try:
        dataset = read_dicom_dataset(data, stop_before_pixels=True, specific_tags=list(IDENTITY_TAGS))
    except (InvalidDicomError, ValueError, EOFError, OSError, TypeError, KeyError):
        return {}
    tags = {}
    for tag in IDENTITY_TAGS:
        value = dataset.get(tag)
        if value not in (None, ""):
            tags[tag] = str(value).strip()
    return tags


def _decode_for_derivatives(data: bytes) -> DecodedImage:
    return decode_image_bytes(data, target_size=DERIVATIVE_SIDE, window_source_side=DERIVATIVE_SIDE)


def film_derivatives(decoded: DecodedImage) -> FilmDerivatives:
    preview = PILImage.fromarray(decoded.pixels)
    # Area averaging: a third of the default filter's time, and no ringing at the ribs' edges.
    preview.thumbnail((DERIVATIVE_SIDE, DERIVATIVE_SIDE), PILImage.Resampling.BOX, reducing_gap=None)
    buffer = io.BytesIO()
    # JPEG at quality 95: about a millisecond where PNG takes twenty, on every upload; the preview is for
    # people at screen size (the original stays as it came).
    preview.save(buffer, format="JPEG", quality=PREVIEW_JPEG_QUALITY)
    window_source = b""
    if decoded.window_source is not None:
        window_buffer = io.BytesIO()
        PILImage.fromarray(decoded.window_source).save(window_buffer, format="PNG", compress_level=1)
        window_source = window_buffer.getvalue()
    return FilmDerivatives(preview_jpeg=buffer.getvalue(), window_source_png=window_source)


def image_store(*, study: Study, upload: ValidatedUpload, user: User) -> Image:
    """Store a validated upload and its derivatives under random names. Call inside the study's
    transaction; files written for a row that then fails are removed again."""
    image = Image(
        study=study,
        original_filename=upload.filename[:255],
        sha256=upload.sha256,
        width=upload.width,
        height=upload.height,
        format=upload.format,
        size_bytes=len(upload.data),
        dicom_metadata=dict(upload.metadata),
        sop_instance_uid=upload.sop_instance_uid,
        uploaded_by=user,
    )
    try:
        image.file.save("upload", ContentFile(upload.data), save=False)
        _derivatives_save(image=image, derivatives=upload.derivatives)
        image.save()
    except OSError as error:  # the storage removed its partial file (diagnostics/storage.py)
        image_delete_files(image=image)
        logger.error("Cannot write an upload to %s: %s", settings.MEDIA_ROOT, error)
        raise StorageUnavailable() from error
    except Exception:
        image_delete_files(image=image)
        raise
    # The row is saved but not committed: if its transaction (or savepoint) rolls back, its files go too.
    for field_file in (image.file, image.preview, image.window_source):
        file_remove_on_rollback(storage=field_file.storage, name=field_file.name)
    return image


def _derivatives_save(*, image: Image, derivatives: FilmDerivatives) -> None:
    """Write the derivatives into the image's fields (the row is not saved here)."""
    image.preview.save("preview.jpg", ContentFile(derivatives.preview_jpeg), save=False)
    if derivatives.window_source_png:
        image.window_source.save("window.png", ContentFile(derivatives.window_source_png), save=False)


def image_delete_files(*, image: Image) -> None:
    """Remove an image's file and derivatives (a row that was rolled back, or never saved)."""
    for field_file in (image.file, image.preview, image.window_source):
        if field_file.name:
            field_file.storage.delete(field_file.name)


def image_ensure_derivatives(*, image: Image) -> Image:
    """The image with its derivatives, made now from the original for a film stored before they existed
    (once: of two concurrent first views, the second one's files are removed again)."""
    if image.preview:
        return image
    with image.file.open("rb") as handle:
        data = handle.read()
    made = Image(pk=image.pk)
    _derivatives_save(image=made, derivatives=film_derivatives(_decode_for_derivatives(data)))
    claimed = Image.objects.filter(pk=image.pk, preview="").update(
        preview=made.preview.name, window_source=made.window_source.name or ""
    )
    if not claimed:
        image_delete_files(image=made)
    image.refresh_from_db(fields=["preview", "window_source"])
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
        for name, value in dicom_study_fields(upload.metadata).items():
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
