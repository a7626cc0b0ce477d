"""STOW-RS: POST /dicomweb/studies (services.py beside this module; docs/dicom-conformance.md)."""

from __future__ import annotations

import json

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from diagnostics.api.common import request_user

from .services import StowRequestError, stow_store

DICOM_JSON = "application/dicom+json"


class DicomJsonRenderer(JSONRenderer):
    """Lets a client that Accepts application/dicom+json be answered (errors included, in the API's shape)."""

    media_type = DICOM_JSON
    format = "dicomjson"


class StowStudiesApi(APIView):
    """Films from a PACS or a modality by HTTP: the token's user files them into its care team through the
    DICOM receiver's ingest. Authentication as the rest of the API (Authorization: Bearer <token>)."""

    renderer_classes = [JSONRenderer, DicomJsonRenderer]

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
            outcome = stow_store(user=user, content_type=request.content_type or "", body=request.body)
        except StowRequestError as error:
            if error.status == 415:
                raise exceptions.UnsupportedMediaType(request.content_type or "", detail=str(error)) from None
            raise exceptions.ParseError(str(error)) from None
        return HttpResponse(json.dumps(outcome.as_dicom_json()), status=outcome.http_status, content_type=DICOM_JSON)
