"""Numbers written for people, one way everywhere: the pages (template filters in
templatetags/portal_format.py), the PDF report, the admin and the API's documentation use these.

- A model's score and its decision threshold are percentages with one decimal, written at the same
  precision: when the two would read the same yet differ, both get another decimal (up to four), so a
  score just under its threshold never reads as equal to it. A score is never "100.0 %" or "0.0 %": a
  model is never certain, so the ends read "> 99.9 %" and "< 0.1 %".
- A share of films or readings (a rate: suspected, not analysable, overridden) is a percentage with one
  decimal; 0.0 % and 100.0 % are true of a count and are written so.
- A latency is whole milliseconds: "33 ms".
- A model's evaluation metric (AUC, sensitivity, ECE, …: a fraction from 0 to 1 with a 95 % interval) has
  three decimals: "0.972".
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import SupportsFloat

MAX_SCORE_DIGITS = 4
METRIC_DIGITS = 3


def _percent_text(value: float, digits: int) -> str:
    """value (0–1) as a percentage with `digits` decimals, rounded half up from the number as written
    (0.4955 -> '49.6', where binary floating point would give 49.5)."""
    percent = Decimal(repr(value)) * 100
    return str(percent.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def _digits_apart(value: float, beside: float | None) -> int:
    """Decimals (of a percentage) needed, from one, for `value` and `beside` to read differently."""
    digits = 1
    if beside is None or value == beside:
        return digits
    while digits < MAX_SCORE_DIGITS and _percent_text(value, digits) == _percent_text(beside, digits):
        digits += 1
    return digits


def score_percent(value: SupportsFloat | None, beside: SupportsFloat | None = None) -> str:
    """A model's score or threshold (0–1) as a percentage: 0.4955 -> '49.6 %', 0.9996 -> '> 99.9 %',
    0.0002 -> '< 0.1 %'. `beside`: the number it is read against (the threshold beside a score, the score
    beside its threshold): both are written with the decimals that tell them apart."""
    if value is None:
        return "—"
    number = float(value)
    digits = _digits_apart(number, None if beside is None else float(beside))
    text = _percent_text(number, digits)
    step = Decimal(1).scaleb(-digits)  # the smallest difference the text shows, in percent
    if Decimal(text) >= 100:
        return f"> {100 - step} %"
    if Decimal(text) <= 0:
        return f"< {step} %"
    return f"{text} %"


def rate_percent(value: SupportsFloat | None) -> str:
    """A share of films or readings (0–1) as a percentage with one decimal: 0.25 -> '25.0 %'."""
    if value is None:
        return "—"
    return f"{_percent_text(float(value), 1)} %"


def latency_ms(value: SupportsFloat | None) -> str:
    """Milliseconds, whole: 4.1497 -> '4 ms', 141.6 -> '142 ms'."""
    if value is None:
        return "—"
    return f"{round(float(value)):d} ms"


def metric(value: SupportsFloat | None) -> str:
    """An evaluation metric (0–1) with three decimals: 0.97162 -> '0.972'."""
    if value is None:
        return "—"
    return f"{float(value):.{METRIC_DIGITS}f}"


def metric_interval(interval: Sequence[SupportsFloat] | None) -> str:
    """A metric's 95 % interval: '0.947–0.989'."""
    if not interval:
        return "—"
    low, high = interval[0], interval[1]
    return f"{metric(low)}–{metric(high)}"
