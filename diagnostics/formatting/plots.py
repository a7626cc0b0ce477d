"""A model's calibration (reliability) plot drawn from the figures its manifest records, the ones the
Models page's table prints: the table and the plot cannot disagree, and the plot is titled with the
model version's name. (The PNG drawn at training time was made from the scores before Platt scaling,
titled with the architecture: its legend said ECE 0.027 beside the table's 0.101.)"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from .numbers import metric


def calibration_plot_png(*, summary: Mapping[str, Any], title: str, image_format: str = "png") -> bytes | None:
    """PNG (or, for tests, SVG with its text kept as text) of `summary`'s reliability curve (an
    ml.training.evaluation summary: `reliability_curve` bins and `ece`), the legend giving the summary's
    own ECE; None when it records no curve."""
    curve = [row for row in summary.get("reliability_curve") or [] if row.get("count")]
    if not curve:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # no pyplot: no global state in a web process

    figure = Figure(figsize=(4.5, 4.5), dpi=100)
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8, label="perfect calibration")
    label = f"ECE {metric(summary['ece'])}" if summary.get("ece") is not None else "observed"
    axes.plot([row["mean_predicted"] for row in curve], [row["fraction_positive"] for row in curve], "o-", label=label)
    axes.set(
        xlabel="mean AI score in the bin",
        ylabel="observed fraction with pneumonia",
        title=title,
        xlim=(0, 1),
        ylim=(0, 1),
    )
    axes.title.set_fontsize(9)
    axes.legend(loc="upper left")
    figure.tight_layout()
    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        figure.savefig(buffer, format=image_format)
    return buffer.getvalue()
