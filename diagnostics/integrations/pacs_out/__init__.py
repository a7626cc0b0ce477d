"""AI results back to the PACS a study came from: a DICOM SR and captioned Secondary Captures."""
