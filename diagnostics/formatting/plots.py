"""A model's calibration (reliability) and ROC plots drawn from the figures its manifest records, the ones
the Models page's table prints: the table and the plots cannot disagree, and each plot is titled with the
model version's name. (The PNGs drawn at training time were titled with the architecture, e.g.
"student224", and the calibration one was made from the scores before Platt scaling: its legend said ECE
0.027 beside the table's 0.101.)"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from .numbers import metric, rate_percent


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # no pyplot: no global state in a web process

    return Figure(figsize=(4.5, 4.5), dpi=100)


def _axes_with_diagonal(label: str) -> tuple[Any, Any]:
    """A figure and its one axes, the grey dashed diagonal drawn (`label` its legend entry)."""
    figure = _figure()
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8, label=label)
    return figure, axes


def _render(figure: Any, image_format: str) -> bytes:
    import matplotlib

    figure.tight_layout()
    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        figure.savefig(buffer, format=image_format)
    return buffer.getvalue()


def roc_plot_png(*, summary: Mapping[str, Any], title: str, image_format: str = "png") -> bytes | None:
    """PNG (or SVG) of `summary`'s ROC curve (an ml.training.evaluation summary: `roc_curve` points,
    false and true positive rates), the legend giving the summary's own AUC and the decision threshold's
    operating point (its sensitivity and specificity); None when it records no curve (older manifests)."""
    curve = summary.get("roc_curve") or []
    if len(curve) < 2:
        return None
    figure, axes = _axes_with_diagonal("chance")
    label = f"AUC {metric(summary['roc_auc'])}" if summary.get("roc_auc") is not None else "ROC curve"
    axes.plot([point["fpr"] for point in curve], [point["tpr"] for point in curve], "-", label=label)
    if summary.get("sensitivity") is not None and summary.get("specificity") is not None:
        axes.plot(
            [1 - summary["specificity"]],
            [summary["sensitivity"]],
            "o",
            label=f"decision threshold: sensitivity {rate_percent(summary['sensitivity'])}, "
            f"specificity {rate_percent(summary['specificity'])}",
        )
    axes.set(xlabel="1 − specificity", ylabel="sensitivity", title=title, xlim=(0, 1), ylim=(0, 1.01))
    axes.title.set_fontsize(9)
    axes.legend(loc="lower right", fontsize=8)
    return _render(figure, image_format)


def calibration_plot_png(*, summary: Mapping[str, Any], title: str, image_format: str = "png") -> bytes | None:
    """PNG (or, for tests, SVG with its text kept as text) of `summary`'s reliability curve (an
    ml.training.evaluation summary: `reliability_curve` bins and `ece`), the legend giving the summary's
    own ECE; None when it records no curve."""
    curve = [row for row in summary.get("reliability_curve") or [] if row.get("count")]
    if not curve:
        return None
    figure, axes = _axes_with_diagonal("perfect calibration")
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
    return _render(figure, image_format)
