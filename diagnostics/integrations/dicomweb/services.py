"""STOW-RS (PS3.18 10.5): a multipart/related body of DICOM Part 10 files, each filed by the receiver's own
ingest (dicom_in.services.dicom_ingest: the same checks, the same refusals), answered as a DICOM JSON store
response: ReferencedSOPSequence (0008,1199) for the films taken, FailedSOPSequence (0008,1198) with a
FailureReason (0008,1197) for the others. No peer: results are not pushed by C-STORE, they are read over
the API and FHIR.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from diagnostics.integrations.dicom_in.services import OUT_OF_RESOURCES, DicomRefused, dicom_ingest
from diagnostics.models import User
from diagnostics.services.audit import audit_record

logger = logging.getLogger(__name__)

DICOM_MEDIA_TYPE = "application/dicom"
PROCESSING_FAILURE = 0x0110  # PS3.18 Table 10.5.3-3 / PS3.7 C.4: the portal failed for its own reason


class StowRequestError(ValueError):
    """A body the endpoint cannot read as STOW-RS at all (400 or 415, nothing stored)."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class StowOutcome:
    stored: list[dict[str, Any]] = field(default_factory=list)  # ReferencedSOPSequence items
    failed: list[dict[str, Any]] = field(default_factory=list)  # FailedSOPSequence items
    comments: list[str] = field(default_factory=list)  # why each failure, in words (logs, audit)

    @property
    def http_status(self) -> int:
        """200 every instance stored, 202 some, 409 none (PS3.18 10.5.3.1)."""
        if not self.failed:
            return 200
        return 202 if self.stored else 409

    def as_dicom_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if self.failed:
            body["00081198"] = {"vr": "SQ", "Value": self.failed}
        if self.stored:
            body["00081199"] = {"vr": "SQ", "Value": self.stored}
        return body


def multipart_boundary(content_type: str) -> str:
    """The boundary of a `multipart/related; type="application/dicom"` request; StowRequestError otherwise."""
    main, _, rest = content_type.partition(";")
    params = dict(_params(rest))
    if main.strip().lower() != "multipart/related":
        shown = main.strip() or "nothing"
        raise StowRequestError(f'STOW-RS takes multipart/related; type="{DICOM_MEDIA_TYPE}", not {shown}.', status=415)
    kind = params.get("type", DICOM_MEDIA_TYPE).lower()
    if kind != DICOM_MEDIA_TYPE:
        raise StowRequestError(f"Only {DICOM_MEDIA_TYPE} parts are taken (PS3.18 binary), not {kind}.", status=415)
    boundary = params.get("boundary", "")
    if not boundary or len(boundary) > 200:  # RFC 2046 says 70; Orthanc's DICOMweb client sends 73
        raise StowRequestError("The multipart/related Content-Type has no usable boundary.")
    return boundary


def _params(text: str) -> list[tuple[str, str]]:
    found = []
    for match in re.finditer(r'\s*([^=;\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)', text):
        value = match.group(2).strip()
        if value.startswith('"'):
            value = value[1:-1].replace('\\"', '"')
        found.append((match.group(1).lower(), value))
    return found


def multipart_parts(body: bytes, boundary: str) -> list[tuple[str, bytes]]:
    """(content type, bytes) of each part of a multipart body (RFC 2046), in order."""
    delimiter = b"--" + boundary.encode("latin-1")
    chunks = body.split(b"\r\n" + delimiter)
    first = chunks[0]
    if not first.startswith(delimiter):
        start = first.find(delimiter)
        if start < 0:
            raise StowRequestError("The body holds no part with the declared boundary.")
        first = first[start:]
    chunks[0] = first[len(delimiter) :]
    parts = []
    for chunk in chunks:
        if chunk.startswith(b"--"):  # the close delimiter: the epilogue follows
            break
        head, separator, data = chunk.partition(b"\r\n\r\n")
        if not separator:
            raise StowRequestError("A part has no blank line between its headers and its content.")
        headers = {}
        for line in head.split(b"\r\n"):
            name, colon, value = line.decode("latin-1").partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        parts.append((headers.get("content-type", DICOM_MEDIA_TYPE).split(";")[0].strip().lower(), data))
    else:
        raise StowRequestError("The body ends without the multipart close delimiter.")
    if not parts:
        raise StowRequestError("The body holds no DICOM instance.")
    return parts


def _identifiers(data: bytes) -> tuple[str, str]:
    """SOP Class and Instance UIDs of a part from its File Meta Information alone ('' when it has none): the
    dataset itself is read only by dicom_ingest, within its limits (a deflated dataset is never inflated here)."""
    from pydicom.filereader import _read_file_meta_info, read_preamble  # as ml.serving.decode reads it

    try:
        source = io.BytesIO(data)
        read_preamble(source, force=False)
        meta = _read_file_meta_info(source)
    except Exception:  # noqa: BLE001 - an unreadable part is reported by the ingest; here only its UIDs
        return "", ""
    return str(meta.get("MediaStorageSOPClassUID", "") or ""), str(meta.get("MediaStorageSOPInstanceUID", "") or "")


def _uid_item(sop_class: str, sop_instance: str) -> dict[str, Any]:
    item: dict[str, Any] = {}
    item["00081150"] = {"vr": "UI", "Value": [sop_class]} if sop_class else {"vr": "UI"}
    item["00081155"] = {"vr": "UI", "Value": [sop_instance]} if sop_instance else {"vr": "UI"}
    return item


def stow_store(*, user: User, content_type: str, body: bytes) -> StowOutcome:
    """File each instance of a STOW-RS body for `user`'s care team (the token's); StowRequestError for a body
    that is not STOW-RS (nothing stored). Every part's media type is checked before any is filed."""
    parts = multipart_parts(body, multipart_boundary(content_type))
    wrong = sorted({kind for kind, _ in parts if kind != DICOM_MEDIA_TYPE})
    if wrong:
        raise StowRequestError(f"Only {DICOM_MEDIA_TYPE} parts are taken, not {', '.join(wrong)}.", status=415)
    outcome = StowOutcome()
    for _kind, data in parts:
        sop_class, sop_instance = _identifiers(data)
        try:
            ingested = dicom_ingest(data=data, user=user, peer=None)
        except DicomRefused as refused:
            outcome.failed.append({**_uid_item(sop_class, sop_instance),
                                   "00081197": {"vr": "US", "Value": [refused.status]}})  # fmt: skip
            outcome.comments.append(f"{sop_instance or 'an instance'}: {refused.comment}")
            continue
        except OSError as error:  # storage: the ingest stored nothing it could not finish
            logger.exception("STOW-RS instance %s not stored", sop_instance)
            outcome.failed.append({**_uid_item(sop_class, sop_instance),
                                   "00081197": {"vr": "US", "Value": [OUT_OF_RESOURCES]}})  # fmt: skip
            outcome.comments.append(f"{sop_instance or 'an instance'}: storage unavailable ({error})")
            continue
        except Exception as error:  # noqa: BLE001 - one instance's failure is its failure item, not a 500 for all
            logger.exception("STOW-RS instance %s failed", sop_instance)
            outcome.failed.append({**_uid_item(sop_class, sop_instance),
                                   "00081197": {"vr": "US", "Value": [PROCESSING_FAILURE]}})  # fmt: skip
            outcome.comments.append(f"{sop_instance or 'an instance'}: {type(error).__name__}")
            continue
        image = ingested.image
        outcome.stored.append(_uid_item(sop_class, sop_instance or (image.sop_instance_uid if image else "")))
    audit_record(
        action="dicom.stow_received",
        actor=user,
        team_id=user.team_id,
        detail={
            "instances": len(parts),
            "stored": len(outcome.stored),
            "failed": len(outcome.failed),
            "reasons": outcome.comments[:20],
        },  # fmt: skip
    )
    return outcome
