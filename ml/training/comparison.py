"""Train every architecture under an explicit compute budget and write the comparison report.

On a 2-core CPU the heavy backbones cannot be trained from scratch properly; each row states
the budget it was given so nobody mistakes a 1-epoch row for the architecture's potential.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ml.serving import artifacts
from ml.serving.settings import require_data_dir, resolve_dir
from ml.training import training
from ml.training.architectures import ARCHITECTURES, resolve_weights
from ml.training.config import WEIGHTS_DIR_ENV, TrainConfig
from ml.training.training import add_run_folder_arguments, output_root

log = logging.getLogger(__name__)

MAX_DEFAULT_MODEL_MB = 25.0
AUC_FLOOR = 0.97

BUDGETS: dict[str, list[dict[str, Any]]] = {
    # The light rows get real training; the heavy from-scratch rows get one short epoch.
    "standard": [
        {"architecture": "cnn", "input_size": 128, "weights": "none", "epochs": 10},
        {
            "architecture": "xception",
            "input_size": 160,
            "weights": "auto",
            "epochs": 40,
            "learning_rate": 1e-3,
            "early_stopping_patience": 5,
        },
        {"architecture": "mobilenetv2", "input_size": 128, "weights": "auto", "epochs": 3, "max_train_images": 1500},
        {"architecture": "resnet50v2", "input_size": 128, "weights": "auto", "epochs": 1, "max_train_images": 600},
        {"architecture": "vgg16", "input_size": 128, "weights": "auto", "epochs": 1, "max_train_images": 600},
        {
            "architecture": "vgg19",
            "input_size": 128,
            "weights": "auto",
            "epochs": 1,
            "max_train_images": 600,
            "optimizer": "sgd",
            "learning_rate": 1e-4,
        },
    ],
    # Seconds per row: for checking the command itself, not for conclusions.
    "quick": [
        {
            "architecture": "cnn",
            "input_size": 32,
            "weights": "none",
            "epochs": 1,
            "max_train_images": 64,
            "max_val_images": 48,
            "bootstrap_samples": 20,
        },
    ],
}


def load_budget(budget: str) -> list[dict[str, Any]]:
    if budget in BUDGETS:
        return BUDGETS[budget]
    return list(json.loads(Path(budget).read_text(encoding="utf-8")))


def run_comparison(
    *,
    budget: str,
    only: list[str] | None,
    data_dir: Path,
    weights_dir: Path | None,
    output_root: Path,
    cache_dir: Path,
    report_path: Path,
    plots_dir: Path,
    seed: int,
    render_only: bool = False,
    also_evaluate: str | None = "external,val",
) -> Path:
    splits = [split for split in (also_evaluate or "").split(",") if split]
    if render_only:  # rebuild the report and plots from the rows a previous run recorded
        results = json.loads((plots_dir / "comparison.json").read_text(encoding="utf-8"))
        for result in results:
            _migrate_also(result)
            for split in splits:
                if "failed" not in result and split not in result["also"] and Path(result["artifact"]).is_dir():
                    result["also"][split] = _also_evaluate(Path(result["artifact"]), data_dir, split)
        _write_outputs(results, report_path, plots_dir, budget, data_dir)
        return report_path
    rows = [r for r in load_budget(budget) if not only or r["architecture"] in only]
    results = []
    for row in rows:
        config = replace(TrainConfig(seed=seed, name=f"compare-{row['architecture']}"), **row)
        # "auto" uses a local ImageNet file when there is one and trains from scratch otherwise.
        resolved = resolve_weights(config.architecture, config.weights, weights_dir)
        log.warning("comparison row %s (weights: %s)", config.architecture, resolved or "none")
        artifact = _existing_artifact(output_root, config)
        if artifact is None:
            try:
                artifact = training.train(
                    config, data_dir=data_dir, output_root=output_root, weights_dir=weights_dir, cache_dir=cache_dir
                )
            except Exception as error:  # one broken row must not cost the others
                log.exception("comparison row %s failed", config.architecture)
                results.append({"architecture": config.architecture, "budget": row, "failed": repr(error)})
                continue
        results.append(_row_summary(artifact, row, resolved))
        results[-1]["also"] = {split: _also_evaluate(artifact, data_dir, split) for split in splits}
        _write_outputs(results, report_path, plots_dir, budget, data_dir)  # partial report survives a crash
    return report_path


def _migrate_also(result: dict[str, Any]) -> None:
    """Rows recorded before several splits were evaluated hold one summary under "also"."""
    also = result.get("also")
    if also is None:
        result["also"] = {}
    elif "split" in also:
        result["also"] = {also["split"]: also}


def _also_evaluate(artifact: Path, data_dir: Path, split: str) -> dict[str, Any] | None:
    """The row's ONNX model on another folder: external/ (half the official test split, films of a
    new period: where models are chosen) or val/ (16 full-size films: how real uploads fare)."""
    from ml.training.evaluation import evaluate_artifact

    if not (data_dir / split).is_dir():
        return None
    summary = evaluate_artifact(artifact, data_dir, split, bootstrap_samples=1000)
    keep = ("split", "n", "n_positive", "roc_auc", "sensitivity", "specificity", "confusion_matrix", "ci95")
    return {key: summary[key] for key in keep}


def _existing_artifact(output_root: Path, config: TrainConfig) -> Path | None:
    """A finished artifact with exactly this config (an interrupted comparison resumes)."""
    for candidate in sorted(output_root.glob(f"{config.architecture}-*"), reverse=True):
        try:
            manifest = artifacts.read_manifest(candidate)
        except (OSError, ValueError):
            continue
        if manifest.get("config") == json.loads(json.dumps(config.to_dict())):
            log.warning("reusing %s for row %s", candidate, config.architecture)
            return candidate
    return None


def _row_summary(artifact: Path, row: dict[str, Any], weights: str | None) -> dict[str, Any]:
    manifest = artifacts.read_manifest(artifact)
    val = manifest["metrics"]["validation"]
    latency = manifest["metrics"]["latency"]["p50_ms"]
    onnx_mb = (artifact / artifacts.ONNX_NAME).stat().st_size / 1e6
    epochs_run = sum(stage["epochs_run"] for stage in manifest["history"])
    return {
        "architecture": manifest["architecture"],
        "artifact": str(artifact),
        "input_size": manifest["input_size"],
        "weights": "ImageNet (local file)"
        if weights
        else (
            "none: from scratch"
            if ARCHITECTURES[manifest["architecture"]].application is None
            else "none: ImageNet weights not available here, trained from scratch"
        ),
        "budget": row,
        "train_images": sum(manifest["data"]["counts"]["train"].values()),
        "val_images": val["n"],
        "epochs_run": epochs_run,
        "stages": [_stage_text(stage) for stage in manifest["history"]],
        "roc_auc": val["roc_auc"],
        "roc_auc_ci95": val.get("ci95", {}).get("roc_auc"),
        "pr_auc": val["pr_auc"],
        "sensitivity": val["sensitivity"],
        "specificity": val["specificity"],
        "threshold": manifest["threshold"],
        "ece": val["ece"],
        "training_seconds": manifest["training_seconds"],
        "latency_p50_ms": latency,
        "auc_per_ms": val["roc_auc"] / latency,
        "onnx_mb": onnx_mb,
        "val_probabilities": str(artifact / "val_probabilities.npy"),
    }


def _stage_text(stage: dict[str, Any]) -> str:
    cached = ", cached features" if stage["features_cached"] else ""
    return f"{stage['stage']} ({stage['epochs_run']} ep, {stage['optimizer']} lr {stage['learning_rate']:g}{cached})"


def recommend(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Best AUC per millisecond among deployable rows (≤ 25 MB) that reach the AUC floor."""
    deployable = [r for r in results if r["onnx_mb"] <= MAX_DEFAULT_MODEL_MB]
    good = [r for r in deployable if r["roc_auc"] >= AUC_FLOOR] or deployable
    return max(good, key=lambda r: r["auc_per_ms"]) if good else None


def _write_outputs(
    results: list[dict[str, Any]], report_path: Path, plots_dir: Path, budget: str, data_dir: Path
) -> None:
    plots_dir.mkdir(parents=True, exist_ok=True)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    (plots_dir / "comparison.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    finished = [r for r in results if "failed" not in r]
    _plot_rocs(finished, plots_dir / "comparison_roc.png", data_dir)
    _plot_auc_vs_latency(finished, plots_dir / "comparison_auc_vs_latency.png")
    failed = [r for r in results if "failed" in r]
    report_path.write_text(_markdown(finished, failed, budget, report_path, plots_dir), encoding="utf-8")


def _validation_labels(artifact: str) -> np.ndarray:
    lines = (Path(artifact) / artifacts.DATA_FILES_NAME).read_text(encoding="utf-8").splitlines()
    return np.array([1.0 if ln.split("\t")[1] == "PNEUMONIA" else 0.0 for ln in lines if ln.startswith("validation\t")])


def _plot_rocs(results: list[dict[str, Any]], path: Path, data_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for r in results:
        y = _validation_labels(r["artifact"])
        fpr, tpr, _ = roc_curve(y, np.load(r["val_probabilities"]))
        ax.plot(fpr, tpr, label=f"{r['architecture']} {r['roc_auc']:.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="Validation ROC (patient-grouped split)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_auc_vs_latency(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for r in results:
        ax.scatter(r["latency_p50_ms"], r["roc_auc"])
        ax.annotate(r["architecture"], (r["latency_p50_ms"], r["roc_auc"]), fontsize=8)
    ax.set(xscale="log", xlabel="ONNX Runtime p50 latency, batch 1, 2 threads (ms)", ylabel="validation ROC AUC")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


ALSO_INTRO = {
    "external": "half the official Kermany test split (films of a later period, never trained on; models, "
    "thresholds and calibration are chosen here). The validation split overstates what a model does on new "
    "patients: compare the two AUC columns.",
    "val": "the official Kermany val films at their original resolution, i.e. real uploads going through the "
    "JPEG draft decode. Far too few for conclusions (see the intervals), but a first look at how each model "
    "copes with films that were not squashed to 224 px by a third party.",
}


def _also_table(results: list[dict[str, Any]]) -> list[str]:
    for result in results:
        _migrate_also(result)
    splits = sorted({split for r in results for split, a in r["also"].items() if a}, key=lambda s: s != "external")
    lines: list[str] = []
    for split in splits:
        lines += _also_split_table([r for r in results if r["also"].get(split)], split)
    return lines


def _also_split_table(rows: list[dict[str, Any]], split: str) -> list[str]:
    lines = [
        "",
        f"### The same models on `{split}/` ({rows[0]['also'][split]['n']} films)",
        "",
        f"`{split}/`: {ALSO_INTRO.get(split, 'another folder of the standard layout.')} Sensitivity and "
        "specificity at each row's own (validation) threshold.",
        "",
        "| architecture | validation AUC | AUC here [95% CI] | sensitivity | specificity | TP / FN / TN / FP |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        a = r["also"][split]
        cm = a["confusion_matrix"]
        lines.append(
            f"| {r['architecture']} | {r['roc_auc']:.3f} | {a['roc_auc']:.3f} {_fmt_ci(a['ci95'].get('roc_auc'))} "
            f"| {a['sensitivity']:.3f} "
            f"| {a['specificity']:.3f} | {cm['tp']} / {cm['fn']} / {cm['tn']} / {cm['fp']} |"
        )
    return lines


def _fmt_ci(ci: list[float] | None) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "n/a"


def _markdown(
    results: list[dict[str, Any]], failed: list[dict[str, Any]], budget: str, report_path: Path, plots_dir: Path
) -> str:
    rel = Path("ml") if plots_dir.parent == report_path.parent else plots_dir
    best = recommend(results)
    lines = [
        "# Model comparison",
        "",
        f"Produced by `python -m ml compare --budget {budget}` (ml/training/comparison.py); do not edit by hand.",
        f"CPU: {platform.processor() or platform.machine()}, 2 cores; code {artifacts.code_version()}.",
        "",
        "All rows are scored by their exported ONNX model on the same patient-grouped validation split "
        "carved from the Kermany train split (no patient on both sides, seed 1337). The official test split "
        "was not used. Threshold: Youden's J on the same validation split, so sensitivity and specificity "
        "are optimistic; ROC AUC does not depend on it. AUC intervals: patient-level bootstrap, 95%.",
        "",
        "| architecture | input | ImageNet weights | training budget (as run) | train images "
        "| val AUC [95% CI] | PR AUC | sens. | spec. | ECE | train time (s) | ONNX p50 (ms) | AUC/ms | ONNX MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['architecture']} | {r['input_size']} | {r['weights']} | {'; '.join(r['stages'])} "
            f"| {r['train_images']} "
            f"| {r['roc_auc']:.3f} {_fmt_ci(r['roc_auc_ci95'])} | {r['pr_auc']:.3f} | {r['sensitivity']:.3f} "
            f"| {r['specificity']:.3f} | {r['ece']:.3f} | {r['training_seconds']:.0f} | {r['latency_p50_ms']:.1f} "
            f"| {r['auc_per_ms']:.3f} | {r['onnx_mb']:.1f} |"
        )
    lines += [f"| {r['architecture']} | failed: {r['failed']} | | | | | | | | | | | | |" for r in failed]
    lines += _also_table(results)
    lines += [
        "",
        f"![ROC curves]({rel}/comparison_roc.png) ![AUC vs latency]({rel}/comparison_auc_vs_latency.png)",
        "",
        "## Reading the table honestly",
        "",
        "- Training time is the fit time on this 2-core CPU; image decoding is excluded. For cached-feature "
        "rows it includes feature extraction only when the cache was cold (manifests from now on record "
        "`feature_seconds` and `feature_cache_hits` per stage). Latency is ONNX Runtime, batch of one, "
        "2 intra-op threads, "
        "median of 30 runs after warm-up, measured right after training on the same machine.",
        "- Rows marked *ImageNet weights not available here* were trained from random initialisation, because "
        "no VGG16/VGG19/ResNet50V2/MobileNetV2 weights can be downloaded on this machine. Their budget "
        "(epochs and train images) is a small fraction of what from-scratch training of these networks needs; "
        "their AUC says what that budget buys, not what the architecture can reach. No pretrained results are "
        "claimed for them.",
        "- VGG19's source recipe (Flatten, Dense 4608, Dropout 0.2, Dense 1152; head → block5_conv3/4 → all "
        "layers, SGD lr 1e-4) is implemented (`--fine-tune vgg19`), but its frozen stages need ImageNet "
        "weights; without them the row trains all layers at once with the recipe's SGD lr 1e-4.",
        "- Xception uses the local ImageNet file: its backbone stays frozen, features are computed once "
        "(no augmentation in that stage) and only the head is trained.",
    ]
    too_big = [r for r in results if r["onnx_mb"] > MAX_DEFAULT_MODEL_MB]
    notes = plots_dir / "comparison-notes.md"
    if notes.is_file():  # hand-written context about this particular run, kept beside its data
        lines += ["", notes.read_text(encoding="utf-8").strip()]
    if best:
        lines += [
            "",
            "## Default model rule",
            "",
            f"Among rows whose ONNX file fits the {MAX_DEFAULT_MODEL_MB:.0f} MB repository budget and reach "
            f"validation AUC ≥ {AUC_FLOOR}, pick the highest AUC per millisecond. Here: **{best['architecture']}** "
            f"at {best['input_size']} px (AUC {best['roc_auc']:.3f}, {best['latency_p50_ms']:.1f} ms, "
            f"{best['auc_per_ms']:.3f} AUC/ms, {best['onnx_mb']:.1f} MB).",
        ]
        lines += [
            f"- {r['architecture']}: not eligible, its ONNX file is {r['onnx_mb']:.0f} MB "
            f"(AUC {r['roc_auc']:.3f} at {r['latency_p50_ms']:.1f} ms, {r['auc_per_ms']:.4f} AUC/ms)."
            for r in too_big
        ]
    return "\n".join(lines) + "\n"


# --- python -m ml compare -----------------------------------------------------------------------


def compare_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_folder_arguments(parser)
    parser.add_argument("--budget", default="standard", help="standard | quick | <json file of rows>")
    parser.add_argument("--only", help="comma-separated architectures")
    parser.add_argument("--report", default="docs/model-comparison.md")
    parser.add_argument("--plots-dir", default="docs/ml")
    parser.add_argument(
        "--also-evaluate",
        default="external,val",
        help="also run every row on these split folders if present, comma-separated ('' to skip)",
    )
    parser.add_argument(
        "--render-only", action="store_true", help="rebuild the report from <plots-dir>/comparison.json"
    )


def compare_command(args: argparse.Namespace) -> int:
    data_dir = require_data_dir(args.data_dir)
    weights_dir = resolve_dir(args.weights_dir, WEIGHTS_DIR_ENV, required=False, what="Weights directory")
    root = output_root(args) / "compare"
    report = run_comparison(
        budget=args.budget,
        only=args.only.split(",") if args.only else None,
        data_dir=data_dir,
        weights_dir=weights_dir,
        output_root=root,
        cache_dir=Path(args.cache_dir) if args.cache_dir else output_root(args) / "cache",
        report_path=Path(args.report),
        plots_dir=Path(args.plots_dir),
        seed=args.seed,
        render_only=args.render_only,
        also_evaluate=args.also_evaluate or None,
    )
    print(report)
    return 0
