"""How numbers are written for clinicians."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def percent(value: float | None, digits: int = 1) -> str:
    """0.4955 -> '49.6 %'; one decimal, so a probability just under its threshold never reads as equal to it."""
    if value is None:
        return "—"
    return f"{float(value) * 100:.{int(digits)}f} %"


@register.filter
def dicom_date(value: str | None) -> str:
    """DICOM's YYYYMMDD as YYYY-MM-DD; anything else as it is."""
    text = str(value or "")
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text
