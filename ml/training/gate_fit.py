"""Fitting the input gate's learned check into an artifact, and reporting the whole gate on a corpus.

The check itself, as served, is ``ml.serving.gate`` (``ChestFilmCheck``, ``thumbnail_vector``); this module
fits its principal components on the artifact's own training films and writes them as ``gate.onnx``
(numpy and onnx only, no TensorFlow). ``python -m ml gate`` runs it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from ml.serving import artifacts, films
from ml.serving.decode import ImageDecodeError, decode_image_bytes
from ml.serving.gate import GATE_FILE, GATE_VERSION, THUMBNAIL_SIDE, thumbnail_vector
from ml.serving.inference import Predictor
from ml.serving.preprocessing import decode_side
from ml.serving.settings import DATA_DIR_ENV, add_data_dir_argument, require_data_dir, resolve_dir
from ml.training import data, nonchest

# The principal components kept, and the training films' percentile that sets both thresholds.
COMPONENTS = 24
THRESHOLD_PERCENTILE = 99.9


def fit_gate(vectors: np.ndarray, output_path: str | Path) -> dict[str, Any]:
    """PCA of training-film thumbnails -> gate.onnx; returns the manifest entry (without sha256)."""
    x = np.asarray(vectors, dtype=np.float64)
    mean = x.mean(axis=0)
    centred = x - mean
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    # Fewer films than components (tiny test sets): keep only directions with real variance.
    k = min(COMPONENTS, len(x) - 1, int(np.sum(singular > singular[0] * 1e-6)))
    components = vt[:k].T  # (D, k)
    variances = (singular[:k] ** 2) / (len(x) - 1)
    _write_onnx(output_path, mean, components, variances)
    residual, mahalanobis = _numpy_scores(x, mean, components, variances)
    thresholds = {
        "residual": float(np.percentile(residual, THRESHOLD_PERCENTILE)),
        "mahalanobis": float(np.percentile(mahalanobis, THRESHOLD_PERCENTILE)),
    }
    return {
        "version": GATE_VERSION,
        "file": Path(output_path).name,
        "thumbnail_side": THUMBNAIL_SIDE,
        "components": k,
        "explained_variance": round(float(variances.sum() / (singular**2 / (len(x) - 1)).sum()), 4),
        "thresholds": thresholds,
        "threshold_rule": f"{THRESHOLD_PERCENTILE}th percentile of the training films",
        "fit_films": len(x),
    }


def _numpy_scores(x: np.ndarray, mean: np.ndarray, components: np.ndarray, variances: np.ndarray):
    centred = x - mean
    z = centred @ components
    residual = ((centred - z @ components.T) ** 2).sum(axis=1)
    mahalanobis = (z**2 / variances).sum(axis=1)
    return residual, mahalanobis


def _write_onnx(path: str | Path, mean: np.ndarray, components: np.ndarray, variances: np.ndarray) -> None:
    """x (N, D) -> (N, 2) [sum((x-m) - (x-m)WWᵀ)², sum(((x-m)W)² / var)] as a plain ONNX graph."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dim = components.shape[0]
    inits = [
        numpy_helper.from_array(mean.astype(np.float32), "mean"),
        numpy_helper.from_array(components.astype(np.float32), "W"),
        numpy_helper.from_array(components.T.astype(np.float32).copy(), "Wt"),
        numpy_helper.from_array((1.0 / variances).astype(np.float32), "inv_var"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
    ]
    nodes = [
        helper.make_node("Sub", ["thumbnail", "mean"], ["c"]),
        helper.make_node("MatMul", ["c", "W"], ["z"]),
        helper.make_node("MatMul", ["z", "Wt"], ["recon"]),
        helper.make_node("Sub", ["c", "recon"], ["diff"]),
        helper.make_node("Mul", ["diff", "diff"], ["diff2"]),
        helper.make_node("ReduceSum", ["diff2", "axis1"], ["residual"], keepdims=1),
        helper.make_node("Mul", ["z", "z"], ["z2"]),
        helper.make_node("Mul", ["z2", "inv_var"], ["zw"]),
        helper.make_node("ReduceSum", ["zw", "axis1"], ["mahalanobis"], keepdims=1),
        helper.make_node("Concat", ["residual", "mahalanobis"], ["scores"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "chest_film_gate",
        [helper.make_tensor_value_info("thumbnail", TensorProto.FLOAT, ["N", dim])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 2])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="ml.training.gate_fit")
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def fit_artifact_gate(artifact_dir: str | Path, data_dir: str | Path) -> dict[str, Any]:
    """Fit the learned check on the artifact's own training films and write it into the artifact.

    The training films are the artifact's patient-grouped training split (its seed and validation
    fraction), so the gate never sees a validation or external film.
    """

    artifact_dir = Path(artifact_dir)
    manifest = artifacts.read_manifest(artifact_dir)
    config = manifest.get("config", {})
    records = films.list_images(data_dir, "train")
    train, _ = data.grouped_split(
        records, val_fraction=float(config.get("val_fraction", 0.2)), seed=int(config.get("seed", 1337))
    )
    side = decode_side(int(manifest["input_size"]))
    vectors = np.stack(
        [thumbnail_vector(decode_image_bytes(r.path.read_bytes(), target_size=side).pixels) for r in train]
    )
    entry = fit_gate(vectors, artifact_dir / GATE_FILE)
    entry["sha256"] = artifacts.sha256_file(artifact_dir / GATE_FILE)
    entry["fit_split"] = "the artifact's patient-grouped training split of <data>/train"
    manifest["gate"] = entry
    artifacts.write_manifest(artifact_dir, manifest)
    return entry


def gate_report(artifact_dir: str | Path, folders: dict[str, list[Path]]) -> dict[str, Any]:
    """Run the whole gate (as served) on named lists of files: pass counts and every refusal."""

    predictor = Predictor.from_artifact(artifact_dir)
    report: dict[str, Any] = {}
    for name, files in folders.items():
        refused: list[dict[str, str]] = []
        by_reason: dict[str, int] = {}
        for path in files:
            try:
                decoded = predictor.decode(path.read_bytes())
            except ImageDecodeError as error:
                code, reason = "unreadable", str(error)
            else:
                verdict = predictor.gate(decoded)
                if verdict.passed:
                    continue
                code, reason = verdict.code, verdict.reason
            by_reason[code] = by_reason.get(code, 0) + 1
            refused.append({"file": path.name, "code": code, "reason": reason})
        report[name] = {
            "files": len(files),
            "passed": len(files) - len(refused),
            "pass_rate": round((len(files) - len(refused)) / len(files), 4) if files else None,
            "refused_by_reason": by_reason,
            "refused": refused,
        }
    return report


# --- python -m ml gate --------------------------------------------------------------------------


def gate_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_dir_argument(parser)
    parser.add_argument("--artifact", help="artifact folder (fit writes gate.onnx and the manifest entry there)")
    parser.add_argument("--fit", action="store_true", help="fit the learned check on the artifact's training films")
    parser.add_argument("--make-corpus", metavar="DIR", help="write the project's non-chest corpus here")
    parser.add_argument(
        "--report",
        action="store_true",
        help="run the gate on the validation split, external/ and val/ (if present) and on --corpus",
    )
    parser.add_argument("--corpus", action="append", default=[], help="a folder of files that must all be refused")
    parser.add_argument("--output", help="also write the report JSON here")


def gate_command(args: argparse.Namespace) -> int:
    if args.make_corpus:
        written = nonchest.write_corpus(args.make_corpus)
        print(f"{len(written)} files in {args.make_corpus}")
    if (args.fit or args.report) and not args.artifact:
        raise SystemExit("--fit and --report need --artifact")
    if args.fit:
        print(json.dumps(fit_artifact_gate(args.artifact, require_data_dir(args.data_dir)), indent=2))
    if args.report:
        folders: dict[str, list[Path]] = {}
        data_dir = resolve_dir(args.data_dir, DATA_DIR_ENV, required=False, what="Data directory")
        if data_dir is not None:  # chest films: the validation split, external/ and val/
            config = artifacts.read_manifest(args.artifact).get("config", {})
            _, validation = data.grouped_split(
                films.list_images(data_dir, "train"),
                val_fraction=float(config.get("val_fraction", 0.2)),
                seed=int(config.get("seed", 1337)),
            )
            folders["validation split (chest films)"] = [r.path for r in validation]
            for split in ("external", "val"):
                if (data_dir / split).is_dir():
                    folders[f"{split}/ (chest films)"] = [r.path for r in films.list_images(data_dir, split)]
        for corpus in args.corpus:
            folders[f"{corpus} (not chest films: all must be refused)"] = sorted(
                p for p in Path(corpus).iterdir() if p.is_file()
            )
        report = gate_report(args.artifact, folders)
        text = json.dumps(report, indent=2)
        if args.output:
            Path(args.output).write_text(text + "\n", encoding="utf-8")
        print(text)
    return 0
