"""FHIR R4 under /fhir/ (apis.py beside this module): paths without a trailing slash, as FHIR clients send them."""

from django.urls import path

from . import apis

urlpatterns = [
    path("metadata", apis.FhirMetadataApi.as_view(), name="fhir_metadata"),
    path("DiagnosticReport", apis.FhirDiagnosticReportSearchApi.as_view(), name="fhir_report_search"),
    path("DiagnosticReport/<str:resource_id>", apis.FhirDiagnosticReportApi.as_view(), name="fhir_report"),
    path("Patient/<str:resource_id>", apis.FhirPatientApi.as_view(), name="fhir_patient"),
    path("Binary/<str:resource_id>", apis.FhirBinaryApi.as_view(), name="fhir_binary"),
]
