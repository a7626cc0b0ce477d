"""Calibrate a model and choose its threshold on the external split, inside the model itself.

The validation split is carved from the training period and overstates what a model does on new
patients (its normals look like the training normals). So the score clinicians see is calibrated,
and the decision threshold set, on ``<data>/external`` (films of the test period; never trained on):

- **Platt scaling** on the logit: p' = sigmoid(a * logit(p) + b), fitted on external: two parameters,
  little to overfit. Every model here ends in Dense(1, sigmoid), whose logit is z = w.h + c, so the map is
  folded into that layer exactly (w' = a w, c' = a c + b): model.keras and model.onnx stay one model, the
  served path is unchanged, and the class activation map (ml/training/export.py), made from that same layer, still
  averages to the logit of the number shown.
- **Threshold with a margin** (``threshold_for_sensitivity_bound``): the highest threshold at which the
  *lower end* of the patient-level bootstrap 95 % interval of sensitivity is still at least the target.
  A threshold where sensitivity on external/ just reaches the target sits on the edge by construction: on
  a new sample it falls below about half the time (the model of 2026-11-28 missed 17 of 193 pneumonias,
  0.912, on the held-back half of the test split at the threshold that gave 0.954 on external/).
- **What to expect on new films** (``crossfit_operating_point``): the whole procedure, Platt scaling and
  the threshold rule, is fitted on one patient-grouped half of the split and applied to the other, both
  ways, over many random halvings. Every film is then decided, and its score calibrated, without itself,
  so the pooled sensitivity, specificity and calibration error are what the procedure gives on films it
  did not see (set on half the films, a little more conservative than the shipped threshold). Intervals
  resample patients, each resample decided by a random one of the halvings, so they hold both the
  sampling and the choice of halves. The portal calls the score a probability only where the upper end
  of that cross-fitted calibration error's interval is at most 0.05 (diagnostics ModelVersion).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ml.serving import artifacts, films
from ml.serving.settings import add_data_dir_argument, require_data_dir
from ml.training import data, evaluation, export
from ml.training.networks import fold_platt

log = logging.getLogger(__name__)

EPS = 1e-6


def logit(prob: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(prob, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p / (1 - p))


def fit_platt_logit(y: np.ndarray, logits: np.ndarray) -> tuple[float, float]:
    """(a, b) of sigmoid(a * logit + b), by maximum likelihood (unregularised)."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1e6, max_iter=1000).fit(np.asarray(logits)[:, None], np.asarray(y, dtype=int))
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def fit_platt(y: np.ndarray, prob: np.ndarray) -> tuple[float, float]:
    """(a, b) of sigmoid(a * logit(p) + b), by maximum likelihood (unregularised)."""
    return fit_platt_logit(y, logit(prob))


def apply_platt(prob: np.ndarray, a: float, b: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(a * logit(prob) + b)))


LEVEL = 0.95  # two-sided: the rule uses the 2.5th percentile, the project's 95 % intervals
CROSSFIT_REPEATS = 20
RULE_WORDS = (
    "highest threshold at which the lower end of the patient-level bootstrap 95 % interval of sensitivity "
    "on {split}/ is at least {target}"
)


def patient_resample_counts(groups: Sequence[str] | np.ndarray, *, samples: int, seed: int) -> np.ndarray:
    """(samples, films) how many times each film is drawn when patients are resampled with replacement."""
    unique, inverse = np.unique(np.asarray(groups), return_inverse=True)
    rng = np.random.default_rng(seed)
    chosen = rng.integers(0, len(unique), size=(samples, len(unique)))
    patient_counts = np.stack([np.bincount(row, minlength=len(unique)) for row in chosen])
    return patient_counts[:, inverse].astype(np.float64)


def threshold_for_sensitivity_bound(
    y: np.ndarray,
    prob: np.ndarray,
    groups: Sequence[str],
    target: float,
    *,
    samples: int = 1000,
    seed: int = 0,
) -> float:
    """The highest threshold whose bootstrap sensitivity's lower 95 % bound is >= target; the lowest positive
    score (every pneumonia flagged) when none is."""
    y, prob = np.asarray(y), np.asarray(prob, dtype=np.float64)
    counts = patient_resample_counts(groups, samples=samples, seed=seed)[:, y == 1]
    positives = prob[y == 1]
    totals = counts.sum(axis=1)
    usable = totals > 0
    for candidate in np.sort(positives)[::-1]:
        caught = counts[:, positives >= candidate].sum(axis=1)
        lower = float(np.percentile(caught[usable] / totals[usable], 100 * (1 - LEVEL) / 2))
        if lower >= target:
            return float(candidate)
    return float(positives.min())


@dataclass(frozen=True)
class Expectation:
    sensitivity: float
    sensitivity_ci95: list[float]
    specificity: float
    specificity_ci95: list[float]
    ece: float
    ece_ci95: list[float]
    repeats: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "sensitivity": self.sensitivity,
            "sensitivity_ci95": self.sensitivity_ci95,
            "specificity": self.specificity,
            "specificity_ci95": self.specificity_ci95,
            "ece": self.ece,
            "ece_ci95": self.ece_ci95,
            "repeats": self.repeats,
        }


def patient_halvings(
    y: np.ndarray, scores: np.ndarray, groups: np.ndarray, *, repeats: int, seed: int
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(repeat, fit_idx, apply_idx): each of ``repeats`` random patient-grouped, class-stratified halvings,
    both ways round."""
    from sklearn.model_selection import StratifiedGroupKFold

    for repeat in range(repeats):
        halves = StratifiedGroupKFold(n_splits=2, shuffle=True, random_state=seed + repeat)
        for fit_idx, apply_idx in halves.split(scores, y, groups):
            yield repeat, fit_idx, apply_idx


def crossfit_measures(
    y: np.ndarray, groups: np.ndarray, decided: np.ndarray, calibrated: np.ndarray, *, samples: int, seed: int
) -> dict[str, Any]:
    """Accuracy, sensitivity, specificity and calibration error of out-of-half decisions and calibrated scores
    (each (repeats, films)), averaged over the repeats, with patient-level bootstrap 95 % intervals (each
    resample decided by a random one of the halvings)."""
    repeats = len(decided)

    def rates(weights: np.ndarray, flags: np.ndarray) -> tuple[float, float, float]:
        positive, negative = weights * (y == 1), weights * (y == 0)
        sensitivity = float((positive * flags).sum() / positive.sum())
        specificity = float((negative * ~flags).sum() / negative.sum())
        accuracy = float(((positive * flags).sum() + (negative * ~flags).sum()) / weights.sum())
        return accuracy, sensitivity, specificity

    ones = np.ones(len(y))
    point = np.array([rates(ones, decided[r]) for r in range(repeats)]).mean(axis=0)
    ece = float(np.mean([evaluation.expected_calibration_error(y, calibrated[r]) for r in range(repeats)]))
    counts = patient_resample_counts(groups, samples=samples, seed=seed)
    picks = np.random.default_rng(seed).integers(0, repeats, size=samples)
    draws, eces = [], []
    for weights, repeat in zip(counts, picks, strict=True):
        if (weights * (y == 1)).sum() == 0 or (weights * (y == 0)).sum() == 0:
            continue
        draws.append(rates(weights, decided[repeat]))
        idx = np.repeat(np.arange(len(y)), weights.astype(int))
        eces.append(evaluation.expected_calibration_error(y[idx], calibrated[repeat, idx]))
    columns = np.array(draws).T

    def interval(values: Any) -> list[float]:
        return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]

    return {
        "accuracy": float(point[0]),
        "accuracy_ci95": interval(columns[0]),
        "sensitivity": float(point[1]),
        "sensitivity_ci95": interval(columns[1]),
        "specificity": float(point[2]),
        "specificity_ci95": interval(columns[2]),
        "ece": ece,
        "ece_ci95": interval(eces),
        "repeats": repeats,
    }


def crossfit_operating_point(
    y: np.ndarray,
    raw_prob: np.ndarray,
    groups: Sequence[str],
    target: float,
    *,
    repeats: int = 20,
    samples: int = 1000,
    seed: int = 0,
) -> Expectation:
    """Platt scaling and the threshold rule fitted on one patient-grouped half, applied to the other (both
    ways, ``repeats`` random halvings); the pooled out-of-half decisions and calibrated scores measured."""
    y, raw_prob = np.asarray(y), np.asarray(raw_prob, dtype=np.float64)
    groups_arr = np.asarray(groups)
    decided = np.zeros((repeats, len(y)), dtype=bool)
    calibrated = np.zeros((repeats, len(y)))
    for repeat, fit_idx, apply_idx in patient_halvings(y, raw_prob, groups_arr, repeats=repeats, seed=seed):
        if len(np.unique(y[fit_idx])) < 2 or len(np.unique(y[apply_idx])) < 2:
            raise ValueError("Too few patients to cross-fit: a patient-grouped half holds one class only.")
        a, b = fit_platt(y[fit_idx], raw_prob[fit_idx])
        fitted = apply_platt(raw_prob[fit_idx], a, b)
        threshold = threshold_for_sensitivity_bound(
            y[fit_idx], fitted, groups_arr[fit_idx], target, samples=samples // 4, seed=seed + repeat
        )
        calibrated[repeat, apply_idx] = apply_platt(raw_prob[apply_idx], a, b)
        decided[repeat, apply_idx] = calibrated[repeat, apply_idx] >= threshold
    measured = crossfit_measures(y, groups_arr, decided, calibrated, samples=samples, seed=seed)
    return Expectation(**{field: measured[field] for field in Expectation.__dataclass_fields__})


def describe_rule(split: str, target: float) -> str:
    return RULE_WORDS.format(split=split, target=target)


def calibrate_artifact(
    artifact_dir: str | Path,
    data_dir: str | Path,
    *,
    split: str = "external",
    min_sensitivity: float = 0.95,
    bootstrap_samples: int = 1000,
) -> dict[str, Any]:
    """Fold Platt scaling fitted on ``split`` into the artifact's model, set its threshold there,
    re-export and re-verify the ONNX model, and record both splits' metrics in the manifest."""
    import keras

    from ml.serving.inference import Predictor

    artifact_dir = Path(artifact_dir)
    manifest = artifacts.read_manifest(artifact_dir)
    if manifest.get("calibration"):
        raise ValueError(f"{artifact_dir} is calibrated already ({manifest['calibration']['method']}).")
    size = int(manifest["input_size"])
    config = manifest.get("config", {})
    records = films.list_images(data_dir, split)
    x_ext, y_ext = films.load_images(records, input_size=size), films.labels_of(records)
    groups = [r.patient for r in records]
    _, validation = data.grouped_split(
        films.list_images(data_dir, "train"),
        val_fraction=float(config.get("val_fraction", 0.2)),
        seed=int(config.get("seed", 1337)),
    )
    x_val, y_val = films.load_images(validation, input_size=size), films.labels_of(validation)

    before = _onnx_probabilities(Predictor.from_artifact(artifact_dir), x_ext)
    a, b = fit_platt(y_ext, before)
    # compile=False: the calibrated model is saved without the optimizer state (a third of the size).
    model = keras.saving.load_model(artifact_dir / artifacts.KERAS_NAME, compile=False)
    fold_platt(model, a, b)
    exported = export.export_verified(model, artifact_dir / artifacts.ONNX_NAME, x_val[:64])
    model.save(artifact_dir / artifacts.KERAS_NAME)
    manifest["onnx_sha256"] = artifacts.sha256_file(exported.path)
    manifest["heatmap"] = exported.heatmap
    manifest["keras_sha256"] = artifacts.sha256_file(artifact_dir / artifacts.KERAS_NAME)
    artifacts.write_manifest(artifact_dir, manifest)  # the predictor below verifies the new file

    predictor = Predictor.from_artifact(artifact_dir)
    after = _onnx_probabilities(predictor, x_ext)
    # A score that float32 rounded to 0 or 1 has no logit to scale (logit() clips it): the check uses the others.
    unsaturated = (before > EPS) & (before < 1 - EPS)
    if float(np.max(np.abs(after - apply_platt(before, a, b))[unsaturated])) > 1e-3:
        raise RuntimeError("The folded calibration does not reproduce Platt scaling on the served model.")
    seed = int(config.get("seed", 1337))
    threshold = threshold_for_sensitivity_bound(
        y_ext, after, groups, min_sensitivity, samples=bootstrap_samples, seed=seed
    )
    expected = crossfit_operating_point(
        y_ext, before, groups, min_sensitivity, repeats=CROSSFIT_REPEATS, samples=bootstrap_samples, seed=seed
    )
    val_prob = _onnx_probabilities(predictor, x_val)
    metrics = manifest.setdefault("metrics", {})
    metrics["uncalibrated"] = {
        "threshold": manifest["threshold"],
        "threshold_rule": manifest.get("threshold_rule"),
        "external_auc": float(evaluation.point_metrics(y_ext, before, 0.5)["roc_auc"]),
        "external_ece": evaluation.expected_calibration_error(y_ext, before),
        "validation_ece": (metrics.get("validation") or {}).get("ece"),
    }
    metrics["validation"] = evaluation.evaluate_predictions(
        y_val,
        val_prob,
        threshold,
        groups=[r.patient for r in validation],
        bootstrap_samples=bootstrap_samples,
        seed=seed,
    )
    metrics["external"] = evaluation.evaluate_predictions(
        y_ext, after, threshold, groups=groups, bootstrap_samples=bootstrap_samples, seed=seed
    )
    metrics["external"]["split"] = split
    metrics["external"]["ece_crossfit"] = expected.ece
    metrics["external"]["ece_crossfit_ci95"] = expected.ece_ci95
    rule = describe_rule(split, min_sensitivity)
    manifest["threshold"] = threshold
    manifest["threshold_rule"] = rule
    manifest["operating_point"] = {
        "threshold": threshold,
        "rule": rule,
        "target_sensitivity": min_sensitivity,
        "expected": {key: value for key, value in expected.as_dict().items() if key.startswith(("sens", "spec"))},
        "expected_method": (
            f"cross-fitted on {split}/: Platt scaling and this threshold rule fitted on one patient-grouped half "
            f"and applied to the other, both ways, over {expected.repeats} random halvings; 95 % intervals by "
            f"patient-level bootstrap ({bootstrap_samples} resamples)"
        ),
    }
    manifest["calibration"] = {
        "method": "platt (sigmoid(a * logit + b)), folded into the final Dense layer",
        "a": a,
        "b": b,
        "fitted_on": f"{split}/ ({len(records)} films, {len(set(groups))} patients)",
        "calibrated_at": artifacts.utc_now_iso(),
    }
    np.save(artifact_dir / "val_probabilities.npy", val_prob.astype(np.float32))
    artifacts.write_manifest(artifact_dir, manifest)
    Predictor.from_artifact(artifact_dir)
    return {
        "artifact": str(artifact_dir),
        "platt": {"a": a, "b": b},
        "threshold": threshold,
        "external": _brief(metrics["external"]),
        "validation": _brief(metrics["validation"]),
        "external_ece_before": metrics["uncalibrated"]["external_ece"],
        "external_ece_crossfit": [expected.ece, expected.ece_ci95],
        "expected_on_new_films": manifest["operating_point"]["expected"],
    }


def _onnx_probabilities(predictor: Any, images: np.ndarray) -> np.ndarray:
    started = time.perf_counter()
    prob = np.concatenate([predictor.predict_batch(images[i : i + 64]) for i in range(0, len(images), 64)])
    log.info("%d films in %.1f s", len(images), time.perf_counter() - started)
    return prob


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("roc_auc", "accuracy", "sensitivity", "specificity", "ece")
    return {key: summary.get(key) for key in keys} | {"ci95": {k: summary.get("ci95", {}).get(k) for k in keys}}


# --- python -m ml calibrate ---------------------------------------------------------------------


def calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_dir_argument(parser)
    parser.add_argument("--artifact", required=True)
    parser.add_argument("--split", default="external")
    parser.add_argument("--min-sensitivity", type=float, default=0.95)
    parser.add_argument("--bootstrap", type=int, default=1000)


def calibrate_command(args: argparse.Namespace) -> int:
    data_dir = require_data_dir(args.data_dir)
    summary = calibrate_artifact(
        args.artifact,
        data_dir,
        split=args.split,
        min_sensitivity=args.min_sensitivity,
        bootstrap_samples=args.bootstrap,
    )
    print(json.dumps(summary, indent=2))
    return 0
