"""Stored values written for people, in one place: `numbers` (the one way a score, threshold, rate, latency or
metric is written), `words` (DICOM header fields, dates, ages and a model's metrics with their intervals, in
words: pure functions), `manifest_tables` (a model version's JSON as the admin's read-only tables, built from
`words`) and `plots` (a model's calibration plot, drawn from the figures its manifest records). The templates
reach them through their filters, diagnostics/templatetags/portal_format.py; the PDF report, the admin and the
Models page call them directly, so a DICOM date or a metric reads the same everywhere."""
