"""A study's result as FHIR R4 (services.py beside this module) for the EHR (docs/integration.md)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from diagnostics.api.common import request_user
from diagnostics.integrations.fhir.services import study_fhir_report
from diagnostics.selectors import study_get_for_user
from diagnostics.services.audit import audit_record

FHIR_JSON = "application/fhir+json"


class FhirJsonRenderer(JSONRenderer):
    media_type = FHIR_JSON
    format = "fhir"


class StudyFhirReportApi(APIView):
    # application/fhir+json for clients that ask for it (Accept); plain JSON otherwise, errors included.
    renderer_classes = [JSONRenderer, FhirJsonRenderer]

    def finalize_response(self, request: Request, response: Response, *args: object, **kwargs: object) -> Response:
        if response.status_code >= 400:  # the API's error format, not a FHIR OperationOutcome
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), "application/json"
        return super().finalize_response(request, response, *args, **kwargs)

    @extend_schema(
        operation_id="studies_fhir_report",
        summary="The study's AI result as a FHIR R4 DiagnosticReport (Observations and ImagingStudy contained)",
        responses={(200, FHIR_JSON): OpenApiTypes.OBJECT, (200, "application/json"): OpenApiTypes.OBJECT},
    )
    def get(self, request: Request, study_id: int) -> Response:
        user = request_user(request)
        study = study_get_for_user(user=user, study_id=study_id)
        audit_record(
            action="study.viewed", actor=user, target=study, team_id=study.patient.team_id, detail={"via": "fhir"}
        )
        report = study_fhir_report(study=study, base_url=request.build_absolute_uri("/").rstrip("/"))
        return Response(report)
