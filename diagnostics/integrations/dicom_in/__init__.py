"""Films from a PACS over DICOM: the C-STORE receiver and the services that file them (docs/integration.md)."""
