"""Bacterial or viral: a second answer for films the model calls pneumonia, in the same ONNX call.

``python -m ml subtype --artifact DIR`` fits a head on the artifact's frozen backbone and writes it into the
artifact's ONNX graph as a third output, ``subtype`` (N, 1): P(viral) among pneumonias (Kermany et al., Cell
2018, separated the two on the same data). The main head and the heatmap are left as they are, so the head
can be re-attached to an artifact whose main head was retrained on the same frozen backbone (the features
are cached by the backbone's fingerprint, ml.training.subtype_features: a second run takes seconds).

- **Films**: the pneumonia films of the artifact's own patient-grouped training split (ml.training.data.
  grouped_split with the manifest's seed and fraction), labelled by their file names (``personN_bacteria_M``,
  ``personN_virus_M``); its validation split's pneumonia films are the held-out check.
- **Head**: logistic regression on the spatial mean and max of the margin-cropped last feature map (the map the
  main head pools), features standardised, its L2 strength chosen by patient-grouped 5-fold cross-validated AUC
  on the training films. Standardisation and calibration are folded into one MatMul + Add + Sigmoid.
- **Calibration and threshold on external/**: Platt scaling of the head's logit fitted on ``<data>/external``'s
  pneumonia films (a later period, never trained on), and the threshold that maximises sensitivity + specificity
  (Youden) there. What to expect on new patients is cross-fitted as for the main head (ml.training.calibration):
  Platt scaling and the threshold fitted on one patient-grouped half and applied to the other, both ways, over
  repeated halvings; 95 % intervals by patient-level bootstrap.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ml.serving import artifacts, films
from ml.serving.artifacts import SUBTYPE_LABELS, SUBTYPE_OUTPUT
from ml.serving.films import ImageRecord
from ml.serving.settings import add_data_dir_argument, require_data_dir
from ml.training import data, evaluation
from ml.training.calibration import crossfit_measures, fit_platt_logit, patient_halvings
from ml.training.subtype_features import CACHE_ROOT, backbone_sha256, compute_features, feature_map_name

log = logging.getLogger(__name__)

HEAD_FILE = "subtype_head.npz"
NODE_PREFIX = "subtype/"
# Inverse L2 strengths tried; on the bundled model's 1,456 features the best was 0.001 (cross-validated AUC 0.799,
# falling to 0.70 at C=1, where a fit also takes a minute).
C_GRID = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03)
CROSSFIT_REPEATS = 20
THRESHOLD_RULE = "highest sensitivity + specificity (Youden) for viral on external/'s pneumonia films, after Platt"


def viral_label(path: Path) -> int:
    """1 for ``*_virus_*``, 0 for ``*_bacteria_*``; a pneumonia film named neither has no subtype label."""
    name = path.name.lower()
    if "_virus_" in name:
        return 1
    if "_bacteria_" in name:
        return 0
    raise ValueError(f"{path}: a pneumonia film's name must say bacteria or virus (personN_bacteria_M / _virus_M)")


def pneumonia_records(records: Sequence[ImageRecord]) -> list[ImageRecord]:
    return [r for r in records if r.label == artifacts.CLASS_NAMES.index("PNEUMONIA")]


# --- the head ----------------------------------------------------------------------------------------


def fit_head(x: np.ndarray, y: np.ndarray, groups: Sequence[str], *, seed: int) -> dict[str, Any]:
    """Standardised logistic regression; C by patient-grouped 5-fold AUC. Returns the head as
    raw-feature weights (D,) and bias (its logit = x @ weights + bias), with the search's scores."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold

    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 1e-6, scale, 1.0)
    z = (x - mean) / scale
    folds = list(StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed).split(z, y, np.asarray(groups)))
    scores: dict[float, float] = {}
    for c in C_GRID:
        out = np.zeros(len(y))
        for fit_idx, held_idx in folds:
            model = LogisticRegression(C=c, max_iter=2000).fit(z[fit_idx], y[fit_idx])
            out[held_idx] = model.decision_function(z[held_idx])
        scores[c] = float(roc_auc_score(y, out))
        log.info("subtype head: C=%g cross-validated AUC %.4f", c, scores[c])
    best = max(scores, key=lambda c: scores[c])
    model = LogisticRegression(C=best, max_iter=2000).fit(z, y)
    coef = model.coef_[0] / scale
    return {
        "weights": coef.astype(np.float64),
        "bias": float(model.intercept_[0] - coef @ mean),
        "C": best,
        "cv_auc": scores,
    }


def head_logits(x: np.ndarray, weights: np.ndarray, bias: float) -> np.ndarray:
    return np.asarray(x, dtype=np.float64) @ np.asarray(weights, dtype=np.float64) + bias


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def youden_threshold(y: np.ndarray, prob: np.ndarray) -> float:
    """The score that maximises sensitivity + specificity (the highest such score on ties)."""
    return evaluation.choose_threshold(np.asarray(y), np.asarray(prob), rule="youden")


def crossfit_expectation(
    y: np.ndarray, logits: np.ndarray, groups: Sequence[str], *, repeats: int, samples: int, seed: int
) -> dict[str, Any]:
    """Platt scaling and the Youden threshold fitted on one patient-grouped half, applied to the other (both
    ways, `repeats` halvings): accuracy, sensitivity (viral), specificity (bacterial) and calibration error of
    the pooled out-of-half decisions, with patient-level 95 % intervals."""
    y, logits, groups_arr = np.asarray(y), np.asarray(logits, dtype=np.float64), np.asarray(groups)
    decided = np.zeros((repeats, len(y)), dtype=bool)
    calibrated = np.zeros((repeats, len(y)))
    for repeat, fit_idx, apply_idx in patient_halvings(y, logits, groups_arr, repeats=repeats, seed=seed):
        a, b = fit_platt_logit(y[fit_idx], logits[fit_idx])
        threshold = youden_threshold(y[fit_idx], sigmoid(a * logits[fit_idx] + b))
        calibrated[repeat, apply_idx] = sigmoid(a * logits[apply_idx] + b)
        decided[repeat, apply_idx] = calibrated[repeat, apply_idx] >= threshold
    return crossfit_measures(y, groups_arr, decided, calibrated, samples=samples, seed=seed)


# --- the graph ---------------------------------------------------------------------------------------


def attach_to_onnx(onnx_path: Path, weights: np.ndarray, bias: float) -> str:
    """Write the head into the ONNX graph at `onnx_path` as the output ``subtype`` (N, 1), replacing one
    attached before; the other outputs are untouched. Returns the backbone's fingerprint."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(onnx_path))
    _detach(model)
    feature_map = feature_map_name(model)
    graph = model.graph
    kernel = numpy_helper.from_array(np.asarray(weights, dtype=np.float32).reshape(-1, 1), f"{NODE_PREFIX}kernel")
    offset = numpy_helper.from_array(np.asarray([bias], dtype=np.float32), f"{NODE_PREFIX}bias")
    graph.initializer.extend([kernel, offset])
    p = NODE_PREFIX
    graph.node.extend(
        [
            helper.make_node("GlobalAveragePool", [feature_map], [f"{p}mean_pooled"], name=f"{p}mean"),
            helper.make_node("Flatten", [f"{p}mean_pooled"], [f"{p}mean_flat"], name=f"{p}mean_flat", axis=1),
            helper.make_node("GlobalMaxPool", [feature_map], [f"{p}max_pooled"], name=f"{p}max"),
            helper.make_node("Flatten", [f"{p}max_pooled"], [f"{p}max_flat"], name=f"{p}max_flat", axis=1),
            helper.make_node("Concat", [f"{p}mean_flat", f"{p}max_flat"], [f"{p}features"], name=f"{p}concat", axis=1),
            helper.make_node("MatMul", [f"{p}features", kernel.name], [f"{p}matmul"], name=f"{p}matmul"),
            helper.make_node("Add", [f"{p}matmul", offset.name], [f"{p}logit"], name=f"{p}add"),
            helper.make_node("Sigmoid", [f"{p}logit"], [SUBTYPE_OUTPUT], name=f"{p}sigmoid"),
        ]
    )
    graph.output.append(helper.make_tensor_value_info(SUBTYPE_OUTPUT, TensorProto.FLOAT, [None, 1]))
    onnx.checker.check_model(model)
    onnx.save(model, str(onnx_path))
    return backbone_sha256(model, feature_map)


def _detach(model: Any) -> None:
    """Remove a subtype head attached before (its nodes, weights and output)."""
    graph = model.graph
    keep_nodes = [node for node in graph.node if not node.name.startswith(NODE_PREFIX)]
    keep_inits = [init for init in graph.initializer if not init.name.startswith(NODE_PREFIX)]
    keep_outputs = [output for output in graph.output if output.name != SUBTYPE_OUTPUT]
    for field, kept in ((graph.node, keep_nodes), (graph.initializer, keep_inits), (graph.output, keep_outputs)):
        kept_copies = [type(item)() for item in kept]
        for copy, item in zip(kept_copies, kept, strict=True):
            copy.CopyFrom(item)
        del field[:]
        field.extend(kept_copies)


def reattach(artifact_dir: str | Path) -> bool:
    """Attach the head saved in the artifact (``subtype_head.npz``) to its ONNX graph again, e.g. after
    model.onnx was re-exported from model.keras (ml.training.packaging); refused when the backbone is not the
    one the head was fitted on. False when the artifact has no subtype head."""
    artifact_dir = Path(artifact_dir)
    manifest = artifacts.read_manifest(artifact_dir)
    head_path = artifact_dir / HEAD_FILE
    if not manifest.get("subtype") or not head_path.is_file():
        return False
    with np.load(head_path) as head:
        weights, bias = head["weights"], float(head["bias"])
    onnx_path = artifact_dir / str(manifest["files"].get("onnx") or artifacts.ONNX_NAME)
    import onnx

    graph = onnx.load(str(onnx_path))
    sha = backbone_sha256(graph, feature_map_name(graph))
    if sha != manifest["subtype"]["backbone_sha256"]:  # checked before the file is touched
        raise ValueError(
            f"{onnx_path}'s backbone ({sha[:12]}…) is not the one the subtype head was fitted on "
            f"({str(manifest['subtype']['backbone_sha256'])[:12]}…): run python -m ml subtype again."
        )
    attach_to_onnx(onnx_path, weights, bias)
    manifest["onnx_sha256"] = artifacts.sha256_file(onnx_path)
    artifacts.write_manifest(artifact_dir, manifest)
    return True


# --- the whole command -------------------------------------------------------------------------------


def fit_subtype(
    artifact_dir: str | Path,
    data_dir: str | Path,
    *,
    cache_root: str | Path = CACHE_ROOT,
    bootstrap_samples: int = 1000,
    command: str = "",
) -> dict[str, Any]:
    """Fit, calibrate, attach and measure the subtype head of `artifact_dir`; records it in the manifest."""
    from sklearn.metrics import roc_auc_score

    from ml.serving.inference import Predictor

    artifact_dir = Path(artifact_dir)
    manifest = artifacts.read_manifest(artifact_dir)
    if not manifest.get("heatmap"):
        raise ValueError(f"{artifact_dir}: the subtype head reads the class activation map's feature map; none here.")
    config = manifest.get("config") or {}
    seed = int(config.get("seed", 1337))
    size = int(manifest["input_size"])
    onnx_path = artifact_dir / str(manifest["files"].get("onnx") or artifacts.ONNX_NAME)
    train_part, validation_part = data.grouped_split(
        films.list_images(data_dir, "train"),
        val_fraction=float(config.get("val_fraction", 0.2)),
        seed=int(config.get("split_seed", seed)),
    )
    splits = {
        "train": pneumonia_records(train_part),
        "validation": pneumonia_records(validation_part),
        "external": pneumonia_records(films.list_images(data_dir, "external")),
    }
    features, labels, groups = {}, {}, {}
    backbone = ""
    for name, records in splits.items():
        labels[name] = np.array([viral_label(r.path) for r in records])
        groups[name] = [r.patient for r in records]
        features[name], backbone = compute_features(onnx_path, records, input_size=size, cache_root=cache_root)

    head = fit_head(features["train"], labels["train"], groups["train"], seed=seed)
    raw = {name: head_logits(features[name], head["weights"], head["bias"]) for name in splits}
    a, b = fit_platt_logit(labels["external"], raw["external"])
    weights, bias = a * head["weights"], a * head["bias"] + b  # Platt folded into the head
    prob = {name: sigmoid(a * raw[name] + b) for name in splits}
    threshold = youden_threshold(labels["external"], prob["external"])

    np.savez(artifact_dir / HEAD_FILE, weights=weights.astype(np.float32), bias=np.float32(bias))
    attached_sha = attach_to_onnx(onnx_path, weights, bias)
    if attached_sha != backbone:
        raise RuntimeError("The graph the head was attached to is not the backbone its features came from.")
    manifest["onnx_sha256"] = artifacts.sha256_file(onnx_path)
    # What the predictor needs to run the head from here on; the whole entry is written below.
    manifest["subtype"] = {"onnx_output": SUBTYPE_OUTPUT, "threshold": threshold, "backbone_sha256": backbone}
    artifacts.write_manifest(artifact_dir, manifest)

    # The served graph, end to end, on external/'s pneumonia films: one call gives all three outputs.
    predictor = Predictor.from_artifact(artifact_dir)
    images = films.load_images(splits["external"], input_size=size)
    served = [predictor.predict_with_cam(images[i : i + 32]) for i in range(0, len(images), 32)]
    served_subtype = np.concatenate([batch.subtypes for batch in served if batch.subtypes is not None])
    served_pneumonia = np.concatenate([batch.probabilities for batch in served])
    parity = float(np.max(np.abs(served_subtype - prob["external"])))
    if parity > 1e-4:
        raise RuntimeError(f"The attached subtype head disagrees with the fitted one by {parity:.2e}")

    def measure(name: str, mask: np.ndarray | None = None) -> dict[str, Any]:
        keep = np.ones(len(labels[name]), dtype=bool) if mask is None else mask
        summary = evaluation.evaluate_predictions(
            labels[name][keep],
            prob[name][keep],
            threshold,
            groups=list(np.asarray(groups[name])[keep]),
            bootstrap_samples=bootstrap_samples,
            seed=seed,
        )
        summary["n_viral"] = summary.pop("n_positive")
        summary["patients"] = len(set(np.asarray(groups[name])[keep]))
        return summary

    flagged = served_pneumonia >= float(manifest["threshold"])
    expected = crossfit_expectation(
        labels["external"], raw["external"], groups["external"], repeats=CROSSFIT_REPEATS,
        samples=bootstrap_samples, seed=seed,
    )  # fmt: skip
    entry = {
        "onnx_output": SUBTYPE_OUTPUT,
        "labels": list(SUBTYPE_LABELS),
        "positive_label": SUBTYPE_LABELS[1],
        "values": "P(viral) among pneumonias: shown only for a film the model calls PNEUMONIA",
        "applies_to": "films the main output calls PNEUMONIA (at the manifest's threshold)",
        "head": {
            "method": (
                "logistic regression on the spatial mean and max of the margin-cropped last feature map "
                "(the frozen backbone's; standardised, L2, C by patient-grouped 5-fold AUC on the training films)"
            ),
            "features": int(len(weights)),
            "C": head["C"],
            "cv_auc": {str(c): score for c, score in head["cv_auc"].items()},
            "file": HEAD_FILE,
        },
        "backbone_sha256": backbone,
        "threshold": threshold,
        "threshold_rule": THRESHOLD_RULE,
        "calibration": {
            "method": "platt (sigmoid(a * logit + b)), folded into the head",
            "a": a,
            "b": b,
            "fitted_on": (
                f"external/ pneumonia films ({len(splits['external'])} films, {len(set(groups['external']))} patients)"
            ),
        },
        "data": {
            name: {
                "films": len(records),
                "patients": len(set(groups[name])),
                "bacterial": int((labels[name] == 0).sum()),
                "viral": int((labels[name] == 1).sum()),
            }
            for name, records in splits.items()
        },
        "metrics": {
            "validation": measure("validation"),
            "external": measure("external"),
            "external_called_pneumonia": measure("external", flagged),
            "uncalibrated_external_auc": float(roc_auc_score(labels["external"], raw["external"])),
        },
        "expected": expected,
        "expected_method": (
            f"cross-fitted on external/'s pneumonia films: Platt scaling and the threshold rule fitted on one "
            f"patient-grouped half and applied to the other, both ways, over {CROSSFIT_REPEATS} random halvings; "
            f"95 % intervals by patient-level bootstrap ({bootstrap_samples} resamples)"
        ),
        "onnx_parity_max_abs_diff": parity,
        "command": command,
        "fitted_at": artifacts.utc_now_iso(),
    }
    manifest["subtype"] = entry
    artifacts.write_manifest(artifact_dir, manifest)
    Predictor.from_artifact(artifact_dir)
    return summary_of(entry)


def summary_of(entry: dict[str, Any]) -> dict[str, Any]:
    keys = ("roc_auc", "accuracy", "sensitivity", "specificity", "ece")
    metrics = entry["metrics"]
    return {
        "threshold": entry["threshold"],
        "calibration": {"a": entry["calibration"]["a"], "b": entry["calibration"]["b"]},
        **{
            split: {k: metrics[split].get(k) for k in keys}
            | {"ci95": {k: (metrics[split].get("ci95") or {}).get(k) for k in keys}, "n": metrics[split]["n"]}
            for split in ("validation", "external", "external_called_pneumonia")
        },
        "expected_on_new_patients": entry["expected"],
        "head": {"C": entry["head"]["C"], "cv_auc": entry["head"]["cv_auc"]},
    }


# --- python -m ml subtype ----------------------------------------------------------------------------


def subtype_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_dir_argument(parser)
    parser.add_argument("--artifact", required=True, help="artifact folder; its model.onnx gains the output")
    parser.add_argument("--cache-dir", default=str(CACHE_ROOT), help="backbone features, by backbone fingerprint")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument(
        "--reattach", action="store_true", help="only attach the head saved in the artifact again (no fitting)"
    )


def subtype_command(args: argparse.Namespace) -> int:
    if args.reattach:
        print(json.dumps({"reattached": reattach(args.artifact)}))
        return 0
    data_dir = require_data_dir(args.data_dir)
    summary = fit_subtype(
        args.artifact,
        data_dir,
        cache_root=args.cache_dir,
        bootstrap_samples=args.bootstrap,
        command="python -m ml " + shlex.join(sys.argv[1:]),
    )
    print(json.dumps(summary, indent=2))
    return 0
