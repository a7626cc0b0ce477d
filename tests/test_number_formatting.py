"""One way to write a number (diagnostics.formatting.numbers), on every surface that shows one."""

from __future__ import annotations

import pytest

from diagnostics.formatting.numbers import latency_ms, metric, metric_interval, rate_percent, score_percent


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.4955, "49.6 %"),
        (0.9996, "> 99.9 %"),
        (1.0, "> 99.9 %"),
        (0.99949, "99.9 %"),
        (0.9995, "> 99.9 %"),
        (0.00049, "< 0.1 %"),
        (0.0004, "< 0.1 %"),
        (0.0, "< 0.1 %"),
        (0.0005, "0.1 %"),
        (None, "—"),
    ],
)
def test_a_score_has_one_decimal_and_never_claims_certainty(value, text):
    assert score_percent(value) == text


def test_a_score_and_its_threshold_are_written_at_the_precision_that_tells_them_apart():
    score, threshold = 0.45726, 0.4573063254356384
    assert (score_percent(score, threshold), score_percent(threshold, score)) == ("45.726 %", "45.731 %")
    assert (score_percent(0.62, 0.4573), score_percent(0.4573, 0.62)) == ("62.0 %", "45.7 %")
    assert score_percent(0.5, 0.5) == "50.0 %"  # equal is written equal


def test_rates_latencies_and_metrics():
    assert (rate_percent(0.0), rate_percent(1.0), rate_percent(0.25)) == ("0.0 %", "100.0 %", "25.0 %")
    assert (latency_ms(4.1497299999946335), latency_ms(141.6), latency_ms(None)) == ("4 ms", "142 ms", "—")
    assert (metric(0.97162), metric(None), metric_interval([0.9471, 0.98912])) == ("0.972", "—", "0.947–0.989")
