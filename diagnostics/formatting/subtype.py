"""The AI's bacterial-or-viral suggestion in words, one wording for the study page, the PDF, FHIR and the SR.

Read from ``Prediction.subtype`` (None: nothing is said). Always worded as a suggestion with its uncertainty:
the calibrated probability that the pneumonia is viral and the accuracy expected on new patients."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diagnostics.formatting import numbers

HEADING = "AI suggestion: bacterial or viral"


def subtype_label_words(subtype: Mapping[str, Any]) -> str:
    """'Viral pneumonia more likely than bacterial' (or the reverse)."""
    if subtype["label"] == "viral":
        return "Viral pneumonia more likely than bacterial"
    return "Bacterial pneumonia more likely than viral"


def subtype_uncertainty_words(subtype: Mapping[str, Any]) -> str:
    """The probability it is viral (an AI score where its calibration on films of a new period is not shown to be
    within 0.05) and the expected accuracy, with its interval when recorded."""
    value = numbers.score_percent(subtype["probability"])
    if subtype.get("probability_calibrated"):
        text = f"probability that it is viral {value}"
    else:  # the main score's rule (ModelVersion.subtype): not shown as a probability
        text = f"AI score for viral {value} (not a calibrated probability)"
    accuracy = subtype.get("expected_accuracy")
    if accuracy is not None:
        text += f"; this suggestion is expected to be right for {numbers.rate_percent(accuracy)} of new patients"
        interval = subtype.get("expected_accuracy_ci95")
        if interval:
            text += f" (95 % CI {numbers.rate_percent(interval[0])} to {numbers.rate_percent(interval[1])})"
    return text


def subtype_sentence(subtype: Mapping[str, Any]) -> str:
    """One sentence for a report: 'AI suggestion, not a diagnosis: viral pneumonia more likely than
    bacterial (probability that it is viral 81.0 %; ... ).'"""
    label = subtype_label_words(subtype)
    return (
        f"AI suggestion, not a diagnosis: {label[0].lower()}{label[1:]} "
        f"({subtype_uncertainty_words(subtype)}). Confirm by clinical and laboratory findings."
    )
