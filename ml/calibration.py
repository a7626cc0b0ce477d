"""Calibrate a model and choose its threshold on the external split, inside the model itself.

The validation split is carved from the training period and overstates what a model does on new
patients (its normals look like the training normals). So the score clinicians see is calibrated,
and the decision threshold set, on ``<data>/external`` (films of the test period; never trained on):

- **Platt scaling** on the logit: p' = sigmoid(a * logit(p) + b), fitted on external. Every model here
  ends in Dense(1, sigmoid), whose logit is z = w.h + c, so the map is folded into that layer exactly
  (w' = a w, c' = a c + b): model.keras and model.onnx stay one model, the served path is unchanged,
  and the class activation map (ml/export.py), made from that same layer, still averages to the logit
  of the number shown.
- **Threshold**: the highest one whose external sensitivity is at least ``min_sensitivity`` (missing
  pneumonia costs more than a second look at a normal film).

Calibration fitted and judged on the same films flatters the ECE, so the command also reports the ECE
of a two-fold patient-grouped cross-fit (fit on one half of external, measured on the other).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ml import artifacts, data, evaluation, export

log = logging.getLogger(__name__)

FINAL_LAYER = "pneumonia"  # ml.architectures._head_layers: Dense(1, sigmoid)
EPS = 1e-6


def logit(prob: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(prob, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p / (1 - p))


def fit_platt(y: np.ndarray, prob: np.ndarray) -> tuple[float, float]:
    """(a, b) of sigmoid(a * logit(p) + b), by maximum likelihood (unregularised)."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1e6, max_iter=1000).fit(logit(prob)[:, None], np.asarray(y, dtype=int))
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def apply_platt(prob: np.ndarray, a: float, b: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(a * logit(prob) + b)))


def fold_platt(model: Any, a: float, b: float) -> None:
    """Put sigmoid(a * logit + b) into the final Dense layer: its logit z becomes a * z + b."""
    layer = model.get_layer(FINAL_LAYER)
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel * a, bias * a + b])


def unfold_platt(model: Any, a: float, b: float) -> None:
    """Take folded Platt scaling back out of the final layer: the trained network (a warm start)."""
    layer = model.get_layer(FINAL_LAYER)
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel / a, (bias - b) / a])


def load_trained_network(artifact_dir: str | Path) -> Any:
    """An artifact's model.keras with any folded Platt scaling taken back out: the network as trained,
    for a warm start or a teacher's targets (never train on anything fitted on external/)."""
    import keras

    model = keras.saving.load_model(Path(artifact_dir) / artifacts.KERAS_NAME, compile=False)
    platt = artifacts.read_manifest(artifact_dir).get("calibration")
    if platt:
        unfold_platt(model, float(platt["a"]), float(platt["b"]))
    return model


def threshold_for_sensitivity(y: np.ndarray, prob: np.ndarray, min_sensitivity: float) -> float:
    """The highest threshold t with sensitivity(prob >= t) >= min_sensitivity."""
    positives = np.sort(np.asarray(prob)[np.asarray(y) == 1])[::-1]
    needed = int(np.ceil(min_sensitivity * len(positives)))
    return float(positives[max(0, needed - 1)])


def crossfit_ece(y: np.ndarray, prob: np.ndarray, groups: list[str], seed: int = 0) -> float | None:
    """ECE of Platt scaling fitted on one patient-grouped half and measured on the other (both ways);
    None when a half holds one class only (tiny splits)."""
    from sklearn.model_selection import StratifiedGroupKFold

    calibrated = np.empty(len(y))
    folds = StratifiedGroupKFold(n_splits=2, shuffle=True, random_state=seed)
    for fit_idx, test_idx in folds.split(prob, y, groups):
        if len(np.unique(y[fit_idx])) < 2:
            return None
        a, b = fit_platt(y[fit_idx], prob[fit_idx])
        calibrated[test_idx] = apply_platt(prob[test_idx], a, b)
    return evaluation.expected_calibration_error(y, calibrated)


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

    from ml.inference import Predictor

    artifact_dir = Path(artifact_dir)
    manifest = artifacts.read_manifest(artifact_dir)
    if manifest.get("calibration"):
        raise ValueError(f"{artifact_dir} is calibrated already ({manifest['calibration']['method']}).")
    size = int(manifest["input_size"])
    config = manifest.get("config", {})
    records = data.list_images(data_dir, split)
    x_ext, y_ext = data.load_images(records, input_size=size), data.labels_of(records)
    groups = [r.patient for r in records]
    _, validation = data.grouped_split(
        data.list_images(data_dir, "train"),
        val_fraction=float(config.get("val_fraction", 0.2)),
        seed=int(config.get("seed", 1337)),
    )
    x_val, y_val = data.load_images(validation, input_size=size), data.labels_of(validation)

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
    expected = apply_platt(before, a, b)
    if float(np.max(np.abs(after - expected))) > 1e-3:
        raise RuntimeError("The folded calibration does not reproduce Platt scaling on the served model.")
    threshold = threshold_for_sensitivity(y_ext, after, min_sensitivity)
    val_prob = _onnx_probabilities(predictor, x_val)
    seed = int(config.get("seed", 1337))
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
    metrics["external"]["ece_crossfit"] = crossfit_ece(y_ext, before, groups, seed=seed)
    manifest["threshold"] = threshold
    manifest["threshold_rule"] = f"highest threshold with sensitivity >= {min_sensitivity} on {split}/"
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
        "external_ece_crossfit": metrics["external"]["ece_crossfit"],
    }


def _onnx_probabilities(predictor: Any, images: np.ndarray) -> np.ndarray:
    started = time.perf_counter()
    prob = np.concatenate([predictor.predict_batch(images[i : i + 64]) for i in range(0, len(images), 64)])
    log.info("%d films in %.1f s", len(images), time.perf_counter() - started)
    return prob


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("roc_auc", "accuracy", "sensitivity", "specificity", "ece")
    return {key: summary.get(key) for key in keys} | {"ci95": {k: summary.get("ci95", {}).get(k) for k in keys}}
