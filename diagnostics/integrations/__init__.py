"""The portal's integrations with hospital systems, one folder each: its service, its task, its API views
(their tests are in tests/integrations/<name>/).

- ``webhooks``: a signed POST to an API client's callback_url when its study finishes.
- ``dicom_in``: films a PACS sends over DICOM (the C-STORE receiver) become studies.
- ``pacs_out``: a done study's results go back to its PACS as a DICOM SR and captioned Secondary Captures.
- ``fhir``: a study's result as a FHIR R4 DiagnosticReport for the EHR.

Each calls the clinical services (diagnostics/services/) and selectors like any other caller; the clinical
code calls an integration only to queue its follow-up work (services.studies.study_queue_follow_ups).
"""
