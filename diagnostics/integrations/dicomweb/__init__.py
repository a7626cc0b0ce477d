"""DICOMweb STOW-RS: films stored by HTTP into the same ingest as the DICOM receiver (docs/dicom-conformance.md)."""
