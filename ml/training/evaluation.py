"""Metrics with patient-level bootstrap confidence intervals, calibration and plots.

Bootstrap resamples patients, not films: films of one patient are correlated, and resampling
them independently would give intervals that are too narrow.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from ml.serving.settings import add_data_dir_argument, require_data_dir

CALIBRATION_BINS = 10


def choose_threshold(y_true: np.ndarray, prob: np.ndarray, *, rule: str = "youden") -> float:
    """Youden's J (sensitivity + specificity - 1) maximised on validation."""
    if rule != "youden":
        raise ValueError(f"unknown threshold rule {rule!r}")
    fpr, tpr, thresholds = roc_curve(y_true, prob)
    best = int(np.argmax(tpr - fpr))
    return float(min(1.0, thresholds[best]))


def confusion(y_true: np.ndarray, prob: np.ndarray, threshold: float) -> dict[str, int]:
    pred = prob >= threshold
    truth = y_true.astype(bool)
    return {
        "tp": int(np.sum(pred & truth)),
        "fp": int(np.sum(pred & ~truth)),
        "tn": int(np.sum(~pred & ~truth)),
        "fn": int(np.sum(~pred & truth)),
    }


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")


def point_metrics(y_true: np.ndarray, prob: np.ndarray, threshold: float) -> dict[str, float]:
    c = confusion(y_true, prob, threshold)
    precision = _ratio(c["tp"], c["tp"] + c["fp"])
    recall = _ratio(c["tp"], c["tp"] + c["fn"])
    both_classes = len(np.unique(y_true)) == 2
    return {
        "accuracy": _ratio(c["tp"] + c["tn"], len(y_true)),
        "precision": precision,
        "sensitivity": recall,
        "specificity": _ratio(c["tn"], c["tn"] + c["fp"]),
        "f1": _ratio(2 * precision * recall, precision + recall)
        if recall == recall and precision == precision
        else float("nan"),
        "roc_auc": float(roc_auc_score(y_true, prob)) if both_classes else float("nan"),
        "pr_auc": float(average_precision_score(y_true, prob)) if both_classes else float("nan"),
        "ece": expected_calibration_error(y_true, prob),
    }


def expected_calibration_error(y_true: np.ndarray, prob: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(prob, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(prob[mask].mean() - y_true[mask].mean())
    return float(ece)


def reliability_curve(y_true: np.ndarray, prob: np.ndarray, bins: int = CALIBRATION_BINS) -> list[dict[str, float]]:
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(prob, edges[1:-1]), 0, bins - 1)
    curve = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            curve.append(
                {
                    "bin_low": float(edges[b]),
                    "bin_high": float(edges[b + 1]),
                    "mean_predicted": float(prob[mask].mean()),
                    "fraction_positive": float(y_true[mask].mean()),
                    "count": int(mask.sum()),
                }
            )
    return curve


ROC_CURVE_MAX_POINTS = 120


def roc_curve_points(
    y_true: np.ndarray, prob: np.ndarray, max_points: int = ROC_CURVE_MAX_POINTS
) -> list[dict[str, float]]:
    """The ROC curve's vertices (false and true positive rates, and the score threshold each starts at),
    at most ``max_points`` of them, evenly thinned with both ends kept: small enough for a manifest, and
    what the portal's Models page draws the curve from (so the plot and the table's AUC come from one
    record). Empty when the labels hold one class only (no curve is defined)."""
    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) < 2:
        return []
    fpr, tpr, thresholds = roc_curve(y_true, prob, drop_intermediate=True)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), max_points)).round().astype(int))
    return [
        {
            "fpr": round(float(fpr[i]), 5),
            "tpr": round(float(tpr[i]), 5),
            # roc_curve's first threshold is +inf (nothing called positive): JSON has no infinity.
            "threshold": round(float(min(thresholds[i], 1.0)), 6),
        }
        for i in keep
    ]


def bootstrap_intervals(
    y_true: np.ndarray,
    prob: np.ndarray,
    threshold: float,
    *,
    groups: Sequence[str] | None,
    samples: int,
    seed: int,
) -> dict[str, list[float] | None]:
    """95% percentile intervals for every point metric, resampling patients."""
    groups_arr = np.asarray(groups if groups is not None else np.arange(len(y_true)).astype(str))
    unique, inverse = np.unique(groups_arr, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(unique))]
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(samples):
        chosen = rng.integers(0, len(unique), size=len(unique))
        idx = np.concatenate([members[g] for g in chosen])
        if len(np.unique(y_true[idx])) < 2:
            continue
        for key, value in point_metrics(y_true[idx], prob[idx], threshold).items():
            draws.setdefault(key, []).append(value)
    intervals: dict[str, list[float] | None] = {}
    for key, values in draws.items():
        finite = np.asarray(values)[~np.isnan(values)]
        # None when undefined in every resample (e.g. precision when nothing is called positive).
        intervals[key] = (
            [float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))] if finite.size else None
        )
    return intervals


def evaluate_predictions(
    y_true: np.ndarray,
    prob: np.ndarray,
    threshold: float,
    *,
    groups: Sequence[str] | None = None,
    bootstrap_samples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    y_true = np.asarray(y_true, dtype=np.float64)
    prob = np.asarray(prob, dtype=np.float64)
    summary: dict[str, Any] = {
        "n": int(len(y_true)),
        "n_positive": int(y_true.sum()),
        "threshold": float(threshold),
        **point_metrics(y_true, prob, threshold),
        "confusion_matrix": confusion(y_true, prob, threshold),
        "reliability_curve": reliability_curve(y_true, prob),
        "roc_curve": roc_curve_points(y_true, prob),
    }
    summary = _nan_to_none(summary)
    if bootstrap_samples > 0:
        summary["ci95"] = bootstrap_intervals(
            y_true, prob, threshold, groups=groups, samples=bootstrap_samples, seed=seed
        )
        summary["ci_method"] = f"patient-level percentile bootstrap, {bootstrap_samples} resamples"
    return summary


def _nan_to_none(summary: dict[str, Any]) -> dict[str, Any]:
    """Undefined metrics (e.g. precision with no positive call) become null, valid JSON."""
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in summary.items()}


def save_plots(y_true: np.ndarray, prob: np.ndarray, out_dir: str | Path, *, title: str) -> dict[str, str]:
    """roc.png and calibration.png; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    fpr, tpr, _ = roc_curve(y_true, prob)
    auc = roc_auc_score(y_true, prob)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, label=f"AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"ROC — {title}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out_dir / "roc.png", dpi=100)
    plt.close(fig)

    curve = reliability_curve(y_true, prob)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
    ax.plot(
        [c["mean_predicted"] for c in curve],
        [c["fraction_positive"] for c in curve],
        "o-",
        label=f"ECE {expected_calibration_error(y_true, prob):.3f}",
    )
    ax.set(
        xlabel="mean predicted P(pneumonia)",
        ylabel="observed fraction pneumonia",
        title=f"Calibration — {title}",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(out_dir / "calibration.png", dpi=100)
    plt.close(fig)
    return {"roc": "roc.png", "calibration": "calibration.png"}


def keras_probabilities(artifact_dir: str | Path, images: np.ndarray, *, uncalibrated: bool = False) -> np.ndarray:
    """P(PNEUMONIA) from an artifact's model.keras, on whichever Keras backend runs here: for
    models trained on a GPU backend before their ONNX export (never the serving path).
    uncalibrated: take the folded Platt scaling (fitted on external/) back out, so that scores used as
    training targets carry nothing learnt from external/."""
    import keras

    from ml.serving.artifacts import KERAS_NAME
    from ml.training.networks import load_trained_network

    if uncalibrated:
        model = load_trained_network(artifact_dir)
    else:
        model = keras.saving.load_model(Path(artifact_dir) / KERAS_NAME, compile=False)
    return model.predict(images, batch_size=64, verbose=0).reshape(-1).astype(np.float64)


def evaluate_keras_artifact(
    artifact_dir: str | Path, data_dir: str | Path, split: str, *, bootstrap_samples: int = 1000
) -> dict[str, Any]:
    """Like evaluate_artifact, but through model.keras (an artifact whose ONNX is not exported yet)."""
    from ml.serving.artifacts import read_manifest
    from ml.serving.films import labels_of, list_images, load_images

    manifest = read_manifest(artifact_dir)
    records = list_images(data_dir, split)
    prob = keras_probabilities(artifact_dir, load_images(records, input_size=int(manifest["input_size"])))
    summary = evaluate_predictions(
        labels_of(records),
        prob,
        float(manifest["threshold"]),
        groups=[r.patient for r in records],
        bootstrap_samples=bootstrap_samples,
        seed=0,
    )
    summary.update({"model": manifest["name"], "model_version": manifest["version"], "split": split,
                    "data_dir": str(data_dir), "predicted_by": "keras (ONNX not exported yet)"})  # fmt: skip
    return summary


def evaluate_artifact(
    artifact_dir: str | Path,
    data_dir: str | Path,
    split: str,
    *,
    bootstrap_samples: int = 1000,
    plots_dir: str | Path | None = None,
    intra_op_threads: int | None = None,
) -> dict[str, Any]:
    """Run an artifact's ONNX model (the serving path) on ``<data_dir>/<split>``."""
    from ml.serving.films import labels_of, list_images, load_images
    from ml.serving.inference import Predictor

    predictor = Predictor.from_artifact(artifact_dir, intra_op_threads=intra_op_threads)
    records = list_images(data_dir, split)
    images = load_images(records, input_size=predictor.input_size)
    prob = np.concatenate([predictor.predict_batch(images[i : i + 64]) for i in range(0, len(images), 64)])
    y = labels_of(records)
    summary = evaluate_predictions(
        y,
        prob,
        predictor.threshold,
        groups=[r.patient for r in records],
        bootstrap_samples=bootstrap_samples,
        seed=0,
    )
    summary.update(
        {
            "model": predictor.name,
            "model_version": predictor.version,
            "onnx_sha256": predictor.model_sha256,
            "data_dir": str(data_dir),
            "split": split,
        }
    )
    if plots_dir:
        Path(plots_dir).mkdir(parents=True, exist_ok=True)
        summary["plots"] = save_plots(y, prob, plots_dir, title=f"{predictor.name} on {split}")
    return summary


def heatmap_placement(
    artifact_dir: str | Path,
    data_dir: str | Path,
    split: str,
    *,
    side: int = 256,
    figure: str | Path | None = None,
) -> dict[str, Any]:
    """Where the served heatmaps of ``split``'s flagged pneumonia films (label and decision both pneumonia)
    put their strong evidence: its share in the film's outer frame (pooled over the films, and the median
    film's) and how often the hottest point is inside it. Drawn as the portal draws them (ml.serving.heatmap, the
    manifest's extent), at ``side`` px; ``figure``: a PNG of the mean drawn map with the frame's inner edge."""
    from ml.serving.artifacts import heatmap_extent
    from ml.serving.films import labels_of, list_images, load_images
    from ml.serving.heatmap import (
        FRAME_FRACTION,
        STRONG_EVIDENCE,
        evidence_over_film,
        evidence_placement,
        positive_evidence,
    )
    from ml.serving.inference import Predictor

    predictor = Predictor.from_artifact(artifact_dir)
    if not predictor.has_cam:
        raise ValueError(f"{predictor.name} has no class activation map, so no heatmap to place.")
    extent = heatmap_extent(predictor.manifest)
    records = list_images(data_dir, split)
    images, y = load_images(records, input_size=predictor.input_size), labels_of(records)
    drawn_sum = np.zeros((side, side), dtype=np.float64)
    placements = []
    for start in range(0, len(images), 64):
        batch = predictor.predict_with_cam(images[start : start + 64])
        assert batch.cams is not None
        for offset, (probability, cam) in enumerate(zip(batch.probabilities, batch.cams, strict=True)):
            if y[start + offset] != 1 or probability < predictor.threshold:
                continue
            values = evidence_over_film(positive_evidence(cam).map, width=side, height=side, extent=extent)
            drawn_sum += values
            placements.append(evidence_placement(values))
    strong_total = sum(p.strong_total for p in placements)
    summary = {
        "model": predictor.name,
        "split": split,
        "flagged_pneumonia_films": len(placements),
        "frame": f"outer {FRAME_FRACTION:.0%} of the film's width and height on each side",
        "strong_evidence": f"drawn values at least {STRONG_EVIDENCE:.0%} of the map's largest",
        "frame_share_pooled": sum(p.strong_in_frame for p in placements) / strong_total if strong_total else None,
        "frame_share_median": float(np.median([p.frame_share for p in placements])) if placements else None,
        "hottest_inside_fraction": float(np.mean([p.hottest_inside for p in placements])) if placements else None,
        "extent": list(extent),
    }
    if figure and placements:
        title = f"{predictor.name}: mean heatmap, {split}"
        _placement_figure(drawn_sum / len(placements), Path(figure), frame=FRAME_FRACTION, title=title)
    return summary


def _placement_figure(mean_map: np.ndarray, path: Path, *, frame: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.6, 3.6))
    ax.imshow(mean_map, cmap="inferno", vmin=0, vmax=1)
    side = mean_map.shape[0]
    edge = frame * side  # the frame's inner edge, as ml.serving.heatmap.evidence_placement counts it
    ax.add_patch(plt.Rectangle((edge, edge), side - 2 * edge, side - 2 * edge, fill=False, color="cyan", lw=1))
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


# --- python -m ml evaluate ----------------------------------------------------------------------


def evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_dir_argument(parser)
    parser.add_argument("--artifact", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--plots-dir")
    parser.add_argument("--output", help="also write the JSON here")
    parser.add_argument("--keras", action="store_true", help="predict with model.keras (before ONNX export)")


def evaluate_command(args: argparse.Namespace) -> int:
    from ml.serving.inference import ModelArtifactError

    data_dir = require_data_dir(args.data_dir)
    try:
        if args.keras:
            summary = evaluate_keras_artifact(args.artifact, data_dir, args.split, bootstrap_samples=args.bootstrap)
        else:
            summary = evaluate_artifact(
                args.artifact, data_dir, args.split, bootstrap_samples=args.bootstrap, plots_dir=args.plots_dir
            )
    except (ModelArtifactError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(summary, indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


# --- python -m ml heatmaps ----------------------------------------------------------------------


def heatmaps_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_dir_argument(parser)
    parser.add_argument("--artifact", required=True)
    parser.add_argument("--split", default="external")
    parser.add_argument("--figure", help="write the mean drawn heatmap here (PNG)")


def heatmaps_command(args: argparse.Namespace) -> int:

    data_dir = require_data_dir(args.data_dir)
    print(json.dumps(heatmap_placement(args.artifact, data_dir, args.split, figure=args.figure), indent=2))
    return 0


# --- python -m ml teacher-scores ----------------------------------------------------------------


def teacher_scores_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_dir_argument(parser)
    parser.add_argument("--artifact", action="append", required=True, help="teacher artifact folder (repeatable)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--output", required=True, help="'relpath<TAB>probability' lines go here")


def teacher_scores_command(args: argparse.Namespace) -> int:
    """Distillation targets: the teachers' mean Keras score on every film of a split, without the
    calibration a teacher was given on external/ (never train on anything fitted there)."""
    import numpy as np

    from ml.serving import films
    from ml.serving.artifacts import read_manifest

    data_dir = require_data_dir(args.data_dir)
    records = films.list_images(data_dir, args.split)
    sizes = {int(read_manifest(a)["input_size"]) for a in args.artifact}
    scores = np.zeros(len(records))
    for size in sizes:
        images = films.load_images(records, input_size=size)
        for artifact in args.artifact:
            if int(read_manifest(artifact)["input_size"]) == size:
                scores += keras_probabilities(artifact, images, uncalibrated=True)
    scores /= len(args.artifact)
    lines = [f"{r.relpath(data_dir)}\t{p:.6f}" for r, p in zip(records, scores, strict=True)]
    Path(args.output).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(json.dumps({"films": len(records), "teachers": len(args.artifact), "output": args.output}))
    return 0
