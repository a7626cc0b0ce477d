"""A study's result as a FHIR R4 DiagnosticReport for the EHR (docs/integration.md)."""
