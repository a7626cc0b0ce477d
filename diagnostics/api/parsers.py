from __future__ import annotations

from typing import IO, Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser


class DicomParser(BaseParser):
    """A raw DICOM Part 10 file as the request body (`Content-Type: application/dicom`)."""

    media_type = "application/dicom"

    # The body is bytes, not a mapping: request.data is the file itself.
    def parse(  # type: ignore[override]
        self, stream: IO[bytes] | None, media_type: str | None = None, parser_context: Any = None
    ) -> bytes:
        if stream is None:
            return b""
        limit = settings.UPLOAD_MAX_BYTES
        data = stream.read(limit + 1)
        if len(data) > limit:
            raise ParseError(f"The file is larger than the {limit // (1024 * 1024)} MB limit.")
        return data


class OctetStreamDicomParser(DicomParser):
    """The same file sent as `application/octet-stream`: the one binary body every OpenAPI client
    generator can send (openapi-python-client skips an operation whose only body is application/dicom).
    The file is judged by its content either way."""

    media_type = "application/octet-stream"
