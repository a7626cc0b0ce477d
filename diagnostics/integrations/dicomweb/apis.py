"""STOW-RS: POST /dicomweb/studies (services.py beside this module; docs/dicom-conformance.md)."""

from __future__ import annotations

import json

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from diagnostics.api.common import request_user
from diagnostics.api.errors import ApiError
from diagnostics.api.negotiation import FirstRendererNegotiation
from diagnostics.upload_limits import ENVELOPE_BYTES, too_large_message

from .services import StowRequestError, stow_store

DICOM_JSON = "application/dicom+json"


def request_body(request: Request) -> bytes:
    """The body, by its Content-Length as Django reads it; or, for a chunked upload (Orthanc's DICOMweb client
    sends chunked by default) under a server that decodes chunked bodies and says so (`wsgi.input_terminated`:
    gunicorn), read to its end, refused once it passes the limit a Content-Length would have been held to."""
    meta = request.META
    if meta.get("CONTENT_LENGTH") or not meta.get("wsgi.input_terminated"):
        return bytes(request.body)
    limit = settings.UPLOAD_MAX_BYTES + ENVELOPE_BYTES
    stream, chunks, size = meta["wsgi.input"], [], 0
    while chunk := stream.read(min(1 << 20, limit + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise ApiError(status_code=413, code="upload_too_large", message=too_large_message())
    return b"".join(chunks)


class StowStudiesApi(APIView):
    """Films from a PACS or a modality by HTTP: the token's user files them into its care team through the
    DICOM receiver's ingest. Authentication as the rest of the API (Authorization: Bearer <token>)."""

    renderer_classes = [JSONRenderer]
    # DICOMweb clients Accept application/dicom+json: the view writes the store response so, errors are the API's JSON.
    content_negotiation_class = FirstRendererNegotiation

    @extend_schema(
        operation_id="dicomweb_stow_studies",
        summary='DICOMweb STOW-RS: store DICOM instances (multipart/related; type="application/dicom")',
        request={"multipart/related": OpenApiTypes.BINARY},
        responses={
            (200, DICOM_JSON): OpenApiTypes.OBJECT,
            (202, DICOM_JSON): OpenApiTypes.OBJECT,
            (409, DICOM_JSON): OpenApiTypes.OBJECT,
        },  # fmt: skip
    )
    def post(self, request: Request) -> HttpResponse:
        user = request_user(request)
        if user.team_id is None:
            raise exceptions.PermissionDenied("Storing films needs an account of a care team.")
        try:
            outcome = stow_store(user=user, content_type=request.content_type or "", body=request_body(request))
        except StowRequestError as error:
            if error.status == 415:
                raise exceptions.UnsupportedMediaType(request.content_type or "", detail=str(error)) from None
            raise exceptions.ParseError(str(error)) from None
        return HttpResponse(json.dumps(outcome.as_dicom_json()), status=outcome.http_status, content_type=DICOM_JSON)
