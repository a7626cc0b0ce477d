"""FHIR R4 for the hospital's EHR (services.py and selectors.py beside this module; docs/integration.md).

Under /fhir/: `metadata` (the CapabilityStatement, open like every FHIR server's), `DiagnosticReport` (search)
and `DiagnosticReport/study-<id>`, `Patient/patient-<id>`, `Binary/report-<id>` (the PDF) and
`Binary/capture-<image id>` (a film's captioned capture). Everything but `metadata` needs an API token (or a
session), answers only the caller's team (another team's record is 404) and is audited. Errors are
OperationOutcomes. The older `/api/v1/studies/<id>/fhir/` keeps answering the same DiagnosticReport.
"""

from __future__ import annotations

import base64
from typing import Any

from django.http import HttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from diagnostics.api.common import request_user
from diagnostics.api.negotiation import AcceptHeaderNegotiation
from diagnostics.integrations.pacs_out.services import film_capture_pixels
from diagnostics.selectors import image_get_for_user, patient_get_for_user, study_film_results, study_get_for_user
from diagnostics.selectors.warnings import study_warnings
from diagnostics.services.audit import audit_read, audit_record
from diagnostics.services.reports import png_bytes, study_report_pdf

from .selectors import FhirSearchError, fhir_report_search_for_user
from .services import fhir_capability_statement, fhir_search_bundle, patient_fhir_resource, study_fhir_report

FHIR_JSON = "application/fhir+json"
ISSUE_CODES = {
    "not_found": "not-found",
    "not_authenticated": "login",
    "authentication_failed": "login",
    "permission_denied": "forbidden",
    "throttled": "throttled",
    "validation_error": "invalid",
    "malformed_request": "invalid",
    "database_unavailable": "transient",
    "not_acceptable": "not-supported",
    "method_not_allowed": "not-supported",
}


class FhirJsonRenderer(JSONRenderer):
    media_type = FHIR_JSON
    format = "fhir"


def fhir_base_url(request: Request) -> str:
    """Where this server's FHIR endpoint answers, for attachment URLs and fullUrls (not an identifier system)."""
    return request.build_absolute_uri(reverse("fhir_metadata")).removesuffix("/metadata")


def _resource_pk(resource_id: str, prefix: str) -> int:
    number = resource_id.removeprefix(f"{prefix}-")
    if not resource_id.startswith(f"{prefix}-") or not number.isdigit():
        raise exceptions.NotFound(f"No such resource: {resource_id} (ids here are {prefix}-<number>).")
    return int(number)


OPERATION_OUTCOME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"type": "string", "enum": ["OperationOutcome"]},
        "issue": {"type": "array", "items": {"type": "object"}},
    },
}


class FhirApi(APIView):
    """application/fhir+json by default (plain JSON for clients that ask for it); errors as OperationOutcome."""

    renderer_classes = [FhirJsonRenderer, JSONRenderer]
    content_negotiation_class = AcceptHeaderNegotiation  # FHIR's own _format, not DRF's ?format=
    # The schema's error responses (diagnostics.api.schema): OperationOutcome in either media type.
    schema_error_content = {FHIR_JSON: OPERATION_OUTCOME_SCHEMA, "application/json": OPERATION_OUTCOME_SCHEMA}

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, FhirSearchError):
            exc = exceptions.ParseError(str(exc))
        response = super().handle_exception(exc)
        error = (response.data or {}).get("error", {}) if isinstance(response.data, dict) else {}
        response.data = {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "error",
                    "code": ISSUE_CODES.get(str(error.get("code", "")), "exception"),
                    "diagnostics": str(error.get("message", "The request failed.")),
                }
            ],
        }
        return response


class FhirMetadataApi(FhirApi):
    permission_classes = [AllowAny]

    @extend_schema(operation_id="fhir_metadata", summary="FHIR CapabilityStatement: what this FHIR endpoint supports",
                   responses={(200, FHIR_JSON): OpenApiTypes.OBJECT})  # fmt: skip
    def get(self, request: Request) -> Response:
        return Response(fhir_capability_statement(base_url=fhir_base_url(request)))


class FhirDiagnosticReportSearchApi(FhirApi):
    schema_extra_error_codes = ("400",)  # a search without a patient or identifier, or an unknown parameter

    @extend_schema(
        operation_id="fhir_diagnostic_report_search",
        summary="FHIR DiagnosticReport search (a searchset Bundle): patient.identifier, patient, date, identifier",
        responses={(200, FHIR_JSON): OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> Response:
        user = request_user(request)
        params = {name: request.query_params.getlist(name) for name in request.query_params}
        studies = fhir_report_search_for_user(user=user, params=params)
        audit_read(
            action="study.listed",
            actor=user,
            team_id=user.team_id,
            detail={
                "via": "fhir",
                "query": request.query_params.urlencode()[:500],
                "rows": len(studies),
                "study_ids": [study.pk for study in studies],
            },  # fmt: skip
        )
        base = fhir_base_url(request)
        reports = [study_fhir_report(study=study, base_url=base) for study in studies]
        return Response(fhir_search_bundle(reports=reports, self_url=request.build_absolute_uri(), base_url=base))


class FhirDiagnosticReportApi(FhirApi):
    @extend_schema(operation_id="fhir_diagnostic_report_read", summary="One FHIR DiagnosticReport (study-<id>)",
                   responses={(200, FHIR_JSON): OpenApiTypes.OBJECT})  # fmt: skip
    def get(self, request: Request, resource_id: str) -> Response:
        user = request_user(request)
        study = study_get_for_user(user=user, study_id=_resource_pk(resource_id, "study"))
        audit_record(
            action="study.viewed", actor=user, target=study, team_id=study.patient.team_id, detail={"via": "fhir"}
        )
        return Response(study_fhir_report(study=study, base_url=fhir_base_url(request)))


class FhirPatientApi(FhirApi):
    @extend_schema(operation_id="fhir_patient_read", summary="One FHIR Patient (patient-<id>)",
                   responses={(200, FHIR_JSON): OpenApiTypes.OBJECT})  # fmt: skip
    def get(self, request: Request, resource_id: str) -> Response:
        user = request_user(request)
        patient = patient_get_for_user(user=user, patient_id=_resource_pk(resource_id, "patient"))
        audit_record(
            action="patient.viewed", actor=user, target=patient, team_id=patient.team_id, detail={"via": "fhir"}
        )
        return Response(patient_fhir_resource(patient=patient))


class FhirBinaryApi(FhirApi):
    """The content itself (application/pdf, image/png), or a FHIR Binary resource for clients that Accept
    application/fhir+json."""

    @extend_schema(
        operation_id="fhir_binary_read",
        summary="A report's PDF (report-<study id>) or a film's captioned capture (capture-<image id>)",
        responses={
            (200, "application/pdf"): OpenApiTypes.BINARY,
            (200, "image/png"): OpenApiTypes.BINARY,
            (200, FHIR_JSON): OpenApiTypes.OBJECT,
        },  # fmt: skip
    )
    def get(self, request: Request, resource_id: str) -> Any:
        user = request_user(request)
        if resource_id.startswith("report-"):
            study = study_get_for_user(user=user, study_id=_resource_pk(resource_id, "report"))
            content, content_type = study_report_pdf(user=user, study=study), "application/pdf"  # audited there
        else:
            image = image_get_for_user(user=user, image_id=_resource_pk(resource_id, "capture"))
            study = study_get_for_user(user=user, study_id=image.study_id)
            [film] = [f for f in study_film_results(study=study, heatmaps=False) if f.image.pk == image.pk]
            pixels = film_capture_pixels(image=film.image, prediction=film.prediction,
                                         warnings=study_warnings(study=study))  # fmt: skip
            content, content_type = png_bytes(pixels), "image/png"
            audit_read(action="image.viewed", actor=user, target=image, team_id=study.patient.team_id,
                       detail={"via": "fhir", "what": "capture"})  # fmt: skip
        if FHIR_JSON in request.headers.get("Accept", ""):
            return Response({"resourceType": "Binary", "id": resource_id, "contentType": content_type,
                             "data": base64.b64encode(content).decode("ascii")})  # fmt: skip
        response = HttpResponse(content, content_type=content_type)
        response["Cache-Control"] = "private, no-store"
        return response


class StudyFhirReportApi(APIView):
    # application/fhir+json for clients that ask for it (Accept); plain JSON otherwise, errors included.
    renderer_classes = [JSONRenderer, FhirJsonRenderer]

    def finalize_response(self, request: Request, response: Response, *args: object, **kwargs: object) -> Response:
        if response.status_code >= 400:  # the API's error format, not a FHIR OperationOutcome
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), "application/json"
        return super().finalize_response(request, response, *args, **kwargs)

    @extend_schema(
        operation_id="studies_fhir_report",
        summary="The study's AI result as a FHIR R4 DiagnosticReport (as GET /fhir/DiagnosticReport/study-<id>)",
        responses={(200, FHIR_JSON): OpenApiTypes.OBJECT, (200, "application/json"): OpenApiTypes.OBJECT},
    )
    def get(self, request: Request, study_id: int) -> Response:
        user = request_user(request)
        study = study_get_for_user(user=user, study_id=study_id)
        audit_record(
            action="study.viewed", actor=user, target=study, team_id=study.patient.team_id, detail={"via": "fhir"}
        )
        return Response(study_fhir_report(study=study, base_url=fhir_base_url(request)))
