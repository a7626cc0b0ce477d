"""Stored values in words for people: DICOM header fields, and a model's metrics with their intervals.

Pure functions (no database): the template filters in templatetags/portal_format.py, the PDF report,
the admin and the Models page call them, so a DICOM date or a metric reads the same everywhere.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.utils.dateformat import format as format_date

from diagnostics.models import Study
from ml.serving.gate import LATERAL_VIEWS

# The header fields the portal keeps (ml.serving.decode.DICOM_METADATA_TAGS and the identity tags of
# services.images.dicom_identity_tags), in the order a reader wants
# them, with their names as the DICOM standard writes them in words.
DICOM_FIELD_LABELS = {
    "PatientID": "Patient ID",
    # The patient's identity, kept to compare with the record the film is filed under (selectors.warnings).
    "PatientName": "Patient's name",
    "PatientBirthDate": "Patient's birth date",
    "PatientSex": "Patient's sex",
    "PatientAge": "Patient's age",
    "StudyDate": "Study date",
    "StudyTime": "Study time",
    "Modality": "Modality",
    "ViewPosition": "View position",
    "BodyPartExamined": "Body part examined",
    "SeriesDescription": "Series description",
    "StudyInstanceUID": "Study instance UID",
}
MODALITY_WORDS = {
    **{code: label.lower() for code, label in Study.Modality.choices},
    "CT": "computed tomography",
    "MR": "magnetic resonance",
    "US": "ultrasound",
    "MG": "mammography",
    "NM": "nuclear medicine",
    "PT": "positron emission tomography",
    "XA": "X-ray angiography",
    "RF": "radiofluoroscopy",
    "OT": "other",
}
VIEW_WORDS = {code: label.lower() for code, label in Study.ViewPosition.choices if code}
AGE_UNITS = {"D": ("day", "days"), "W": ("week", "weeks"), "M": ("month", "months"), "Y": ("year", "years")}
DATE_FORMAT = "j M Y"  # 26 Aug 2004: no day/month order to misread


@dataclass(frozen=True)
class DicomFact:
    tag: str  # the DICOM keyword, e.g. StudyDate
    label: str  # in words, e.g. "Study date"
    value: str  # in words, e.g. "26 Aug 2004"; "not recorded" when the file lacks it


def dicom_date(value: object) -> datetime.date | None:
    """A DICOM DA value (YYYYMMDD) as a date; None if absent or malformed."""
    text = str(value or "").strip()
    try:
        return datetime.datetime.strptime(text, "%Y%m%d").date() if len(text) == 8 else None
    except ValueError:
        return None


def dicom_age_words(value: object) -> str:
    """A DICOM AS value in words: '004Y' -> '4 years', '018M' -> '18 months', '001W' -> '1 week'."""
    text = str(value or "").strip().upper()
    if len(text) != 4 or not text[:3].isdigit() or text[3] not in AGE_UNITS:
        return text
    number = int(text[:3])
    singular, plural = AGE_UNITS[text[3]]
    return f"{number} {singular if number == 1 else plural}"


def _time_words(value: str) -> str:
    """A DICOM TM value (HHMMSS.FFFFFF, parts optional) as HH:MM[:SS]."""
    digits = value.strip().split(".")[0]
    if not digits.isdigit() or len(digits) not in (2, 4, 6):
        return value
    return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2)) + (":00" if len(digits) == 2 else "")


def dicom_value_words(tag: str, value: object) -> str:
    text = str(value).strip()
    if tag == "PatientName":
        return " ".join(part for part in text.split("=")[0].split("^") if part.strip())
    if tag == "PatientSex":
        return {"M": "M (male)", "F": "F (female)", "O": "O (other)"}.get(text.upper(), text)
    if tag in ("StudyDate", "PatientBirthDate"):
        day = dicom_date(text)
        return format_date(day, DATE_FORMAT) if day else text
    if tag == "StudyTime":
        return _time_words(text)
    if tag == "PatientAge":
        return dicom_age_words(text)
    if tag == "Modality" and text.upper() in MODALITY_WORDS:
        return f"{text.upper()} ({MODALITY_WORDS[text.upper()]})"
    if tag == "ViewPosition":
        if text.upper() in VIEW_WORDS:
            return f"{text.upper()} ({VIEW_WORDS[text.upper()]})"
        if text.upper() in LATERAL_VIEWS:
            return f"{text.upper()} (lateral)"
    if tag == "BodyPartExamined":
        return text.capitalize()
    return text


def _label(tag: str) -> str:
    """A keyword the table does not name, in words: 'SeriesNumber' -> 'Series number'."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", tag).split()
    return " ".join([words[0], *(word.lower() if not word.isupper() else word for word in words[1:])]) if words else tag


def dicom_facts(metadata: Mapping[str, Any] | None, *, always: Iterable[str] = ()) -> list[DicomFact]:
    """The header fields a file gave, in words and in reading order; `always` adds missing ones as
    'not recorded'."""
    metadata = metadata or {}
    wanted = set(always)
    order = list(DICOM_FIELD_LABELS) + sorted(set(metadata) - set(DICOM_FIELD_LABELS))
    facts = []
    for tag in order:
        value = metadata.get(tag)
        if value in (None, ""):
            if tag in wanted:
                facts.append(DicomFact(tag, DICOM_FIELD_LABELS.get(tag) or _label(tag), "not recorded"))
            continue
        facts.append(DicomFact(tag, DICOM_FIELD_LABELS.get(tag) or _label(tag), dicom_value_words(tag, value)))
    return facts


# --- model metrics ------------------------------------------------------------------------------

# The metrics of an evaluation summary (ml.training.evaluation), in order, with how to print them.
METRICS = [
    ("roc_auc", "ROC AUC"),
    ("pr_auc", "PR AUC"),
    ("sensitivity", "Sensitivity"),
    ("specificity", "Specificity"),
    ("precision", "Precision (PPV)"),
    ("accuracy", "Accuracy"),
    ("f1", "F1"),
    ("ece", "Expected calibration error"),
]


def metric_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Label, value and 95 % interval of each metric an evaluation summary holds."""
    ci95 = summary.get("ci95") or {}
    return [
        {"key": key, "label": label, "value": summary.get(key), "ci": ci95.get(key)}
        for key, label in METRICS
        if key in summary
    ]


def is_evaluation_summary(value: object) -> bool:
    """An ml.training.evaluation summary (a split's metrics) rather than some other mapping."""
    return isinstance(value, Mapping) and "n" in value and any(key in value for key, _ in METRICS)
