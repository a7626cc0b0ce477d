"""Upload size limits enforced before and while the body is read, never after it is stored.

The middleware refuses a request whose declared Content-Length is over the limit
without reading it; the upload handler counts the bytes of each streamed file, so
a body that understates its length is stopped too, and `bad_request` (handler400)
answers that with the same 413 and message.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpRequest, HttpResponse
from django.views.defaults import bad_request as django_bad_request

# Form fields and multipart boundaries around the files: a little headroom over the file limit.
ENVELOPE_BYTES = 1024 * 1024


def too_large_message() -> str:
    return f"The upload is larger than the {settings.UPLOAD_MAX_BYTES // (1024 * 1024)} MB limit."


class RequestSizeLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > settings.UPLOAD_MAX_BYTES + ENVELOPE_BYTES:
            return refusal(request)
        return self.get_response(request)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler400: an upload stopped mid-stream (RequestDataTooBig) gets the 413 it deserves."""
    if isinstance(exception, RequestDataTooBig):
        return refusal(request)
    return django_bad_request(request, exception)


def refusal(request: HttpRequest) -> HttpResponse:
    # The body is left unread; close the connection so the client stops sending it.
    if request.path.startswith("/api/"):
        body = {"error": {"code": "upload_too_large", "message": too_large_message()}}
        response = HttpResponse(json.dumps(body), status=413, content_type="application/json")
    else:
        response = HttpResponse(too_large_message(), status=413, content_type="text/plain; charset=utf-8")
    response["Connection"] = "close"
    return response


class SizeLimitedUploadHandler(FileUploadHandler):
    """Stops reading a multipart body as soon as one file passes the upload limit."""

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self.received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.received > settings.UPLOAD_MAX_BYTES:
            raise RequestDataTooBig(too_large_message())
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None
