"""Stored values written for people, in one place: `words` (DICOM header fields, dates, ages and a model's
metrics with their intervals, in words: pure functions) and `manifest_tables` (a model version's JSON as the
admin's read-only tables, built from `words`). The templates reach them through their filters,
diagnostics/templatetags/portal_format.py; the PDF report, the admin and the Models page call them directly,
so a DICOM date or a metric reads the same everywhere."""
