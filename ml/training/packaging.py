"""`python -m ml export`: re-export ONNX from the Keras model, verify it, write the model card."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ml.serving import artifacts
from ml.serving.gate import GATE_FILE, INTENDED_AGE_YEARS
from ml.serving.inference import Predictor
from ml.training import export, subtype

PLOTS = ("roc.png", "calibration.png", "roc_external.png", "calibration_external.png")


def package_artifact(
    artifact_dir: Path,
    destination: Path | None,
    *,
    include_keras: bool,
    selection_note: str | None = None,
    evaluations: dict[str, Path] | None = None,
) -> Path:
    """Re-export model.onnx from model.keras (parity-checked), write MODEL_CARD.md, copy."""
    import keras

    manifest = artifacts.read_manifest(artifact_dir)
    # compile=False: only the network is needed, and a model trained on another backend (PyTorch on a
    # GPU) carries that backend's optimizer class, which TensorFlow cannot rebuild.
    model = keras.saving.load_model(artifact_dir / artifacts.KERAS_NAME, compile=False)
    size = int(manifest["input_size"])
    probe = np.random.default_rng(0).uniform(0, 255, (8, size, size, 3)).astype(np.float32)
    target = destination or artifact_dir
    target.mkdir(parents=True, exist_ok=True)
    exported = export.export_verified(model, target / artifacts.ONNX_NAME, probe)
    onnx_path, parity = exported.path, exported.parity
    manifest["onnx_sha256"] = artifacts.sha256_file(onnx_path)
    manifest["heatmap"] = exported.heatmap
    if manifest.get("subtype"):  # model.keras holds the main head only: the subtype head goes back into the graph
        if destination:
            shutil.copy2(artifact_dir / subtype.HEAD_FILE, target / subtype.HEAD_FILE)
        artifacts.write_manifest(target, manifest)
        subtype.reattach(target)
        manifest = artifacts.read_manifest(target)
    if manifest.pop("onnx_pending", None):
        # Trained on another backend: this is its first ONNX. Its validation figures were Keras
        # predictions, which the parity check (atol 1e-4) ties to what ONNX Runtime now serves.
        manifest["metrics"]["onnx_keras_max_abs_diff"] = parity
        manifest["metrics"]["latency"] = export.measure_latency(onnx_path, size)
        manifest["exported_after_training"] = f"ONNX exported with TensorFlow on {artifacts.utc_now_iso()}"
    manifest["source_artifact"] = str(artifact_dir)
    if selection_note:
        manifest["selection_note"] = selection_note
    for name, path in (evaluations or {}).items():
        # Output of `python -m ml evaluate` on another folder, e.g. the 16 full-size official val films.
        summary = json.loads(Path(path).read_text(encoding="utf-8"))
        summary.pop("reliability_curve", None)
        summary.pop("roc_curve", None)
        manifest.setdefault("metrics", {}).setdefault("other_evaluations", {})[name] = summary
    if destination:
        for name in (*PLOTS, artifacts.DATA_FILES_NAME, GATE_FILE):
            if (artifact_dir / name).is_file():
                shutil.copy2(artifact_dir / name, target / name)
        if include_keras:
            shutil.copy2(artifact_dir / artifacts.KERAS_NAME, target / artifacts.KERAS_NAME)
        else:
            manifest["files"]["keras"] = None
    artifacts.write_manifest(target, manifest)
    Predictor.from_artifact(target)  # refuse to hand over something the portal cannot load
    (target / "MODEL_CARD.md").write_text(render_model_card(manifest), encoding="utf-8")
    return target


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _ci(val: dict[str, Any], key: str, pct: bool = False) -> str:
    ci = val.get("ci95", {}).get(key)
    if not ci:
        return ""
    return f" (95% CI {_pct(ci[0])}–{_pct(ci[1])})" if pct else f" (95% CI {ci[0]:.3f}–{ci[1]:.3f})"


ONE_FINDING_LIMITATION = (
    "- The model separates NORMAL vs PNEUMONIA only; it does not distinguish bacterial from viral pneumonia "
    "or detect other findings."
)
SUBTYPE_LIMITATION = (
    "- The model separates NORMAL vs PNEUMONIA, and suggests bacterial or viral for a pneumonia from the file-name "
    "labels of one centre (no culture or PCR confirmation is recorded with them); it detects no other finding."
)
LIMITATIONS = [
    "- The validation split comes from the training period (also used for early stopping) and overstates what "
    "a model does on new patients. When the model is calibrated (see above), its calibration and threshold were "
    "fitted on external/, half of the official Kermany test split, so the external figures at the threshold "
    "are in-sample; the other half of the test split is held back and scored independently. No other-hospital "
    "evaluation has been run.",
    "- Single-site pediatric data (Guangzhou Women and Children's Medical Center); performance on adults, "
    "other hospitals, portable films or DICOMs from other devices is unknown.",
    "- Training images were squashed to 224×224 without keeping the aspect ratio; uploads are squashed the same "
    "way (to 224×224, then to the model's input size).",
    ONE_FINDING_LIMITATION,
]


def _external_lines(manifest: dict[str, Any]) -> list[str]:
    """External split (films of a new period) and calibration, when `python -m ml calibrate` ran."""
    ext = manifest["metrics"].get("external")
    calibration = manifest.get("calibration")
    if not ext:
        return []
    cm = ext["confusion_matrix"]
    lines = [
        f"## External performance ({ext.get('split', 'external')}/: {ext['n']} films of the test period, "
        f"{ext['n_positive']} pneumonia; never trained on)",
        f"- ROC AUC {ext['roc_auc']:.3f}{_ci(ext, 'roc_auc')}; PR AUC {ext['pr_auc']:.3f}{_ci(ext, 'pr_auc')}.",
        f"- At the threshold: sensitivity {_pct(ext['sensitivity'])}{_ci(ext, 'sensitivity', True)}, "
        f"specificity {_pct(ext['specificity'])}{_ci(ext, 'specificity', True)}, accuracy {_pct(ext['accuracy'])}"
        f"{_ci(ext, 'accuracy', True)}.",
        f"- Confusion matrix: TP {cm['tp']}, FN {cm['fn']}, TN {cm['tn']}, FP {cm['fp']}.",
    ]
    if calibration:
        before = manifest["metrics"].get("uncalibrated", {})
        ece = f"ECE on external {ext['ece']:.3f} (in-sample)"
        if ext.get("ece_crossfit") is not None:
            ece += f", {ext['ece_crossfit']:.3f} cross-fitted"
            if ext.get("ece_crossfit_ci95"):
                low, high = ext["ece_crossfit_ci95"]
                ece += f" (95% CI {low:.3f}–{high:.3f})"
            ece += " (fitted on half the patients, measured on the others)"
        if before.get("external_ece") is not None:
            ece += f"; {before['external_ece']:.3f} before calibration"
        threshold = f"- The threshold {manifest['threshold']:.4f} is the {manifest['threshold_rule']}"
        if before.get("threshold") is not None:
            threshold += f" (before calibration: {before['threshold']:.4f}, {before['threshold_rule']})"
        lines += [
            f"- Calibration: {calibration['method']}, a = {calibration['a']:.4f}, b = {calibration['b']:.4f}, "
            f"fitted on {calibration['fitted_on']}. {ece}.",
            threshold + ".",
            *_operating_point_lines(manifest),
        ]
    return [*lines, ""]


def _operating_point_lines(manifest: dict[str, Any]) -> list[str]:
    """What to expect at the threshold on films of new patients (ml.training.calibration.crossfit_operating_point),
    and whether the score may be called a probability (the cross-fitted ECE interval's upper end)."""
    point = manifest.get("operating_point")
    ext = manifest["metrics"].get("external") or {}
    lines = []
    if point:
        expected = point["expected"]
        sens, spec = expected["sensitivity_ci95"], expected["specificity_ci95"]
        lines.append(
            f"- **Expected on films of new patients** at this threshold: sensitivity {_pct(expected['sensitivity'])} "
            f"(95% CI {_pct(sens[0])}–{_pct(sens[1])}), specificity {_pct(expected['specificity'])} "
            f"(95% CI {_pct(spec[0])}–{_pct(spec[1])}); {point['expected_method']}."
        )
    if ext.get("ece_crossfit_ci95"):
        upper = ext["ece_crossfit_ci95"][1]
        calibrated = artifacts.score_is_probability(manifest["metrics"])
        word = "a probability" if calibrated else "an AI score, not a calibrated probability"
        lines.append(
            f"- The portal calls the score {word}: the upper end of the cross-fitted ECE interval is {upper:.3f} "
            f"({'within' if calibrated else 'above'} {artifacts.PROBABILITY_MAX_ECE})."
        )
    return lines


def _other_evaluations(manifest: dict[str, Any]) -> list[str]:
    lines = []
    for name, ev in manifest["metrics"].get("other_evaluations", {}).items():
        cm = ev["confusion_matrix"]
        lines += [
            f"## Other evaluation: {name}",
            f"- `python -m ml evaluate` on `{ev['split']}` ({ev['n']} films, {ev['n_positive']} pneumonia), "
            f"same threshold: ROC AUC {ev['roc_auc']:.3f}{_ci(ev, 'roc_auc')}, sensitivity {_pct(ev['sensitivity'])}, "
            f"specificity {_pct(ev['specificity'])}; TP {cm['tp']}, FN {cm['fn']}, TN {cm['tn']}, FP {cm['fp']}.",
            "",
        ]
    return lines


def _counts(counts: dict[str, int]) -> str:
    return " / ".join(f"{n:,} {name}" for name, n in counts.items())


def _weights(weights: dict[str, float] | None) -> str:
    if not weights:
        return "none"
    names = ("NORMAL", "PNEUMONIA")
    return ", ".join(f"{names[int(k)]} {v:.2f}" for k, v in weights.items())


def _gate_lines(manifest: dict[str, Any]) -> list[str]:
    gate = manifest.get("gate")
    if not gate:
        return []
    low, high = INTENDED_AGE_YEARS
    return [
        "## Input gate (ml/serving/gate.py, gate.onnx)",
        "- Before every score: DICOM Modality CR or DX, BodyPartExamined the chest when present, no lateral view; "
        "then named pixel checks (resolution, colour, flat, dynamic range, noise); then a learned check: "
        f"distance from the training films on {gate['components']} principal components of "
        f"{gate['thumbnail_side']}×{gate['thumbnail_side']} thumbnails ({gate['fit_films']:,} training films; "
        f"thresholds at the {gate['threshold_rule']}).",
        "- A film that fails is *not analysable*: no probability, the reason shown instead.",
        f"- Patients outside ages {low}–{high} get their result with an 'outside intended use' warning.",
        "",
    ]


def _trained_on(manifest: dict[str, Any]) -> str:
    """Where the manifest says it trained; models from before that was recorded trained on the project's CPU."""
    trained = manifest.get("trained_on")
    if not trained:
        return "a 2-core CPU"
    extras = ", ".join(str(trained[key]) for key in ("backend", "precision") if trained.get(key))
    return f"{trained.get('device', 'an unrecorded device')}" + (f" ({extras})" if extras else "")


def _heatmap_line(manifest: dict[str, Any]) -> str:
    heatmap = manifest.get("heatmap")
    if not heatmap:
        return (
            "- Heatmap: none. This model's architecture gives no heatmap (its head is not global average pooling "
            "straight into the final Dense layer), so the portal shows none."
        )
    height, width = heatmap["shape"]
    line = (
        f"- Heatmap: class activation map, the ONNX graph's second output `{heatmap['onnx_output']}` "
        f"({height}×{width} per film): the final Dense layer applied at each location of the last feature map, "
        "i.e. the logit of P(PNEUMONIA) there; their mean is the logit of the probability. Computed with the "
        f"probability in the same model call (ONNX vs Keras: max difference {heatmap['onnx_keras_max_abs_diff']:.1e})."
    )
    top, left, bottom, right = artifacts.heatmap_extent(manifest)
    if (top, left, bottom, right) != artifacts.FULL_EXTENT:
        line += (
            f" The pooling leaves out the feature map's outer cells (made largely of the convolutions' zero padding "
            f"and the film's edge), so the map covers the film from {100 * top:.0f}% to {100 * bottom:.0f}% of its "
            f"height and {100 * left:.0f}% to {100 * right:.0f}% of its width, and the heatmap is clear outside."
        )
    return f"{line} {heatmap['note']}" if heatmap.get("note") else line


def _subtype_lines(manifest: dict[str, Any]) -> list[str]:
    """The bacterial-or-viral head (ml/training/subtype.py), when the artifact has one."""
    entry = manifest.get("subtype")
    if not entry:
        return []
    data, metrics, expected = entry["data"], entry["metrics"], entry["expected"]

    def row(name: str, summary: dict[str, Any]) -> str:
        return (
            f"- {name} ({summary['n']} films, {summary['n_viral']} viral, {summary['patients']} patients): "
            f"AUC {summary['roc_auc']:.3f}{_ci(summary, 'roc_auc')}, accuracy {_pct(summary['accuracy'])}"
            f"{_ci(summary, 'accuracy', True)}, sensitivity for viral {_pct(summary['sensitivity'])}"
            f"{_ci(summary, 'sensitivity', True)}, specificity {_pct(summary['specificity'])}"
            f"{_ci(summary, 'specificity', True)}, ECE {summary['ece']:.3f}."
        )

    def interval(key: str) -> str:
        low, high = expected[f"{key}_ci95"]
        return f"{_pct(expected[key])} [{_pct(low)}, {_pct(high)}]"

    train = data["train"]
    return [
        f"## Bacterial or viral (ml/training/subtype.py; the ONNX graph's output `{entry['onnx_output']}`)",
        "- A suggestion shown only for a film the model calls PNEUMONIA: P(viral) among pneumonias, from the same "
        f"model call as the probability and the heatmap. Head: {entry['head']['method']}; "
        f"{entry['head']['features']} inputs; saved as {entry['head']['file']} and re-attached by "
        "`python -m ml subtype --reattach` (a re-export from model.keras does it), fitted on backbone "
        f"`{entry['backbone_sha256'][:16]}…`.",
        f"- Trained on the training split's pneumonia films: {train['films']:,} ({train['bacterial']:,} bacterial, "
        f"{train['viral']:,} viral) of {train['patients']:,} patients; labels from the file names.",
        f"- Calibrated on {entry['calibration']['fitted_on']} by {entry['calibration']['method']}; label viral when "
        f"P(viral) ≥ {entry['threshold']:.4f} ({entry['threshold_rule']}).",
        row("Validation split's pneumonia films", metrics["validation"]),
        row("external/'s pneumonia films", metrics["external"]),
        row("external/'s films the model calls pneumonia", metrics["external_called_pneumonia"]),
        f"- Expected on new patients (cross-fitted on external/): accuracy {interval('accuracy')}, sensitivity for "
        f"viral {interval('sensitivity')}, specificity {interval('specificity')}, ECE {expected['ece']:.3f} "
        f"[{expected['ece_ci95'][0]:.3f}, {expected['ece_ci95'][1]:.3f}]. {entry['expected_method']}.",
        "- Kermany et al. 2018 report AUC 0.940, accuracy 90.7 % on their test split for the same distinction.",
        *_subtype_gap(metrics),
        "",
    ]


def _subtype_gap(metrics: dict[str, Any]) -> list[str]:
    """Say so when the training period's films are much harder for the head than external/'s."""
    validation, external = metrics["validation"]["roc_auc"], metrics["external"]["roc_auc"]
    if validation is None or external is None or external - validation < 0.05:
        return []
    return [
        f"- The validation split's films (the training period, new patients) are harder for this head than "
        f"external/'s (AUC {validation:.3f} against {external:.3f}; accuracy "
        f"{_pct(metrics['validation']['accuracy'])} against {_pct(metrics['external']['accuracy'])}): the "
        "expectation above holds for films like the test period's; elsewhere expect the validation figures."
    ]


def render_model_card(manifest: dict[str, Any]) -> str:
    val = manifest["metrics"]["validation"]
    data = manifest["data"]
    counts, patients = data["counts"], data["patients"]
    cm = val["confusion_matrix"]
    latency = manifest["metrics"]["latency"]
    size = manifest["input_size"]
    files = "model.onnx, manifest.json, data_files.txt, roc.png, calibration.png"
    files += ", model.keras" if manifest["files"].get("keras") else ""
    files += f", {manifest['subtype']['head']['file']}" if manifest.get("subtype") else ""
    f1 = "n/a" if val["f1"] is None else f"{val['f1']:.3f}"
    lines = [
        f"# Model card: {manifest['name']} (version {manifest['version']})",
        "",
        "## Intended use",
        manifest["intended_use"],
        "",
        "## Model",
        f"- Architecture: `{manifest['architecture']}`, input {size}×{size} grayscale replicated to 3 channels, "
        f"preprocessing `{manifest['preprocessing_version']}` (ml/serving/preprocessing.py)."
        + (f" {manifest['preprocessing_note']}" if manifest.get("preprocessing_note") else ""),
        f"- Weights: {manifest['weights']['source']}.",
        f"- Output: P(PNEUMONIA); label PNEUMONIA when P ≥ {manifest['threshold']:.4f} ({manifest['threshold_rule']}).",
        _heatmap_line(manifest),
        f"- Files: {files}. model.onnx sha256 `{manifest['onnx_sha256']}`.",
        f"- Code version: `{manifest['code_version']}`; trained {manifest['created_at']} in "
        f"{manifest['training_seconds']:.0f} s (fit time) on {_trained_on(manifest)}.",
        "",
        "## Data",
        "- Kermany et al. 2018 pediatric chest X-ray set (CC BY 4.0), official *train* split only; images "
        "pre-squashed to 224×224 by a third party.",
        f"- Split: {data['split_method']}.",
        f"- Train: {_counts(counts['train'])} films of {patients['train']:,} patients; "
        f"validation: {_counts(counts['validation'])} films of {patients['validation']:,} patients.",
        f"- Class imbalance: {data['class_weighting']['method']} class weights "
        f"({_weights(data['class_weighting']['weights'])}) in the loss.",
        f"- Every image with its sha256: data_files.txt (sha256 `{data['file_list_sha256']}`).",
        "",
        "## Validation performance (ONNX model, patient-grouped validation split)",
        f"- ROC AUC {val['roc_auc']:.3f}{_ci(val, 'roc_auc')}; PR AUC {val['pr_auc']:.3f}{_ci(val, 'pr_auc')}.",
        f"- At the threshold: sensitivity {_pct(val['sensitivity'])}{_ci(val, 'sensitivity', True)}, "
        f"specificity {_pct(val['specificity'])}{_ci(val, 'specificity', True)}, "
        f"precision {_pct(val['precision'])}, F1 {f1}, accuracy {_pct(val['accuracy'])}.",
        f"- Confusion matrix (n={val['n']}): TP {cm['tp']}, FN {cm['fn']}, TN {cm['tn']}, FP {cm['fp']}.",
        f"- Calibration: ECE {val['ece']:.3f} (10 bins), see calibration.png. Intervals: "
        f"{val.get('ci_method', 'none')}.",
        f"- ONNX Runtime latency, batch 1, {latency['threads']} threads on this CPU: "
        f"p50 {latency['p50_ms']:.2f} ms, p95 {latency['p95_ms']:.2f} ms.",
        "",
        *_external_lines(manifest),
        *_other_evaluations(manifest),
        *_gate_lines(manifest),
        *_subtype_lines(manifest),
        "## Limitations",
        *(
            SUBTYPE_LIMITATION if manifest.get("subtype") and line == ONE_FINDING_LIMITATION else line
            for line in LIMITATIONS
        ),
    ]
    if manifest.get("selection_note"):
        lines += ["", "## Why this model", manifest["selection_note"]]
    return "\n".join(lines) + "\n"


# --- python -m ml export: package_artifact (the ONNX re-export itself is ml.training.export) -------


def export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--artifact", required=True)
    parser.add_argument("--to", help="copy the packaged artifact here (e.g. ml/default_model)")
    parser.add_argument("--no-keras", action="store_true", help="leave model.keras out of the copy")
    parser.add_argument("--selection-note", help="why this model was chosen (goes into MODEL_CARD.md)")
    parser.add_argument(
        "--evaluation",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="add an `evaluate` summary to the manifest and model card (repeatable)",
    )


def export_command(args: argparse.Namespace) -> int:
    evaluations = dict(item.split("=", 1) for item in args.evaluation)
    out = package_artifact(
        Path(args.artifact),
        Path(args.to) if args.to else None,
        include_keras=not args.no_keras,
        selection_note=args.selection_note,
        evaluations={name: Path(path) for name, path in evaluations.items()},
    )
    print(out)
    return 0
