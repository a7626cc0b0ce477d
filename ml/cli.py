"""Command line: python -m ml train|evaluate|export|compare|bench|variants|split ..."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from ml.training.config import (
    ARTIFACTS_DIR_ENV,
    AUGMENTATION_POLICIES,
    DATA_DIR_ENV,
    DEFAULT_ARTIFACTS_DIR,
    WEIGHTS_DIR_ENV,
    StageConfig,
    TrainConfig,
    require_dir,
    resolve_dir,
    vgg19_progressive_stages,
)


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help=f"dataset root with <split>/NORMAL,PNEUMONIA (default ${DATA_DIR_ENV})")


def _add_train_flags(parser: argparse.ArgumentParser) -> None:
    _add_data_flags(parser)
    parser.add_argument("--weights-dir", help=f"folder of local ImageNet weights (default ${WEIGHTS_DIR_ENV})")
    parser.add_argument("--output-root", help=f"where versioned artifacts go (default ${ARTIFACTS_DIR_ENV} or runs/)")
    parser.add_argument("--cache-dir", help="where backbone features are memoised (default <output-root>/cache)")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--val-fraction", type=float, default=0.2)


def _parse_stages(text: str | None) -> list[StageConfig]:
    """'partial:5:1e-4:sgd,full:5:1e-4:sgd' -> fine-tuning stages after the head stage."""
    if not text:
        return []
    if text == "vgg19":
        return vgg19_progressive_stages()[1:]
    stages = []
    for item in text.split(","):
        name, epochs, lr, opt = item.split(":")
        stages.append(StageConfig(name, int(epochs), float(lr), opt))
    return stages


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ml", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train one architecture and write a versioned artifact")
    _add_train_flags(train)
    train.add_argument("--arch", required=True)
    train.add_argument("--input-size", type=int)
    train.add_argument("--weights", default="none", help="none | imagenet | auto | <file or folder>")
    train.add_argument("--epochs", type=int, default=10, help="from-scratch epochs, or head epochs when pretrained")
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    train.add_argument("--fine-tune", help="stages after the head: 'vgg19' or 'partial:5:1e-4:sgd,full:5:1e-4:sgd'")
    train.add_argument("--max-train-images", type=int)
    train.add_argument("--max-val-images", type=int)
    train.add_argument("--class-weighting", choices=["balanced", "none"], default="balanced")
    train.add_argument("--no-augment", action="store_true")
    train.add_argument(
        "--augmentation",
        choices=AUGMENTATION_POLICIES,
        default="geometric",
        help="geometric: zoom, rotation, flip, shift, shear; acquisition: also gamma, contrast, exposure, blur, "
        "noise; robust: also a resize through another resampler and JPEG re-encoding",
    )
    train.add_argument("--patience", type=int, default=3)
    train.add_argument("--bootstrap", type=int, default=1000)
    train.add_argument("--name")
    train.add_argument("--split-seed", type=int, help="the patient split's seed if not --seed (ensemble members)")
    train.add_argument("--init-weights", help="start from this .weights.h5 of the same architecture and size")
    train.add_argument("--soft-labels", help="distil: 'relpath<TAB>probability' teacher scores for the training films")
    train.add_argument("--distill-alpha", type=float, default=0.5, help="weight of the teacher in the target")
    train.add_argument(
        "--pool-margin",
        type=int,
        default=0,
        help="leave this many cells of the last feature map's outer frame out of the pooling (and the heatmap)",
    )
    train.add_argument("--max-fit-minutes", type=float, help="stop fitting after this long, keeping the best weights")
    train.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "float32", "mixed_float16", "mixed_bfloat16"],
        help="auto: mixed_float16 on a GPU, float32 on a CPU; the exported model is float32 either way",
    )
    train.add_argument(
        "--resume-dir",
        help="keep the run's progress here (every epoch); the same command run again goes on where it stopped",
    )

    evaluate = sub.add_parser("evaluate", help="run an artifact (ONNX) on a folder; print JSON")
    _add_data_flags(evaluate)
    evaluate.add_argument("--artifact", required=True)
    evaluate.add_argument("--split", default="val")
    evaluate.add_argument("--bootstrap", type=int, default=1000)
    evaluate.add_argument("--plots-dir")
    evaluate.add_argument("--output", help="also write the JSON here")
    evaluate.add_argument("--keras", action="store_true", help="predict with model.keras (before ONNX export)")

    heatmaps = sub.add_parser(
        "heatmaps", help="where an artifact's heatmaps put their evidence on a split's flagged pneumonia films"
    )
    _add_data_flags(heatmaps)
    heatmaps.add_argument("--artifact", required=True)
    heatmaps.add_argument("--split", default="external")
    heatmaps.add_argument("--figure", help="write the mean drawn heatmap here (PNG)")

    scores = sub.add_parser("teacher-scores", help="mean score of artifacts (Keras) on a split: soft labels to distil")
    _add_data_flags(scores)
    scores.add_argument("--artifact", action="append", required=True, help="teacher artifact folder (repeatable)")
    scores.add_argument("--split", default="train")
    scores.add_argument("--output", required=True, help="'relpath<TAB>probability' lines go here")

    export = sub.add_parser("export", help="re-export ONNX from model.keras, verify parity, package for serving")
    export.add_argument("--artifact", required=True)
    export.add_argument("--to", help="copy the packaged artifact here (e.g. ml/default_model)")
    export.add_argument("--no-keras", action="store_true", help="leave model.keras out of the copy")
    export.add_argument("--selection-note", help="why this model was chosen (goes into MODEL_CARD.md)")
    export.add_argument(
        "--evaluation",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="add an `evaluate` summary to the manifest and model card (repeatable)",
    )

    compare = sub.add_parser("compare", help="train every architecture under a budget; write the report")
    _add_train_flags(compare)
    compare.add_argument("--budget", default="standard", help="standard | quick | <json file of rows>")
    compare.add_argument("--only", help="comma-separated architectures")
    compare.add_argument("--report", default="docs/model-comparison.md")
    compare.add_argument("--plots-dir", default="docs/ml")
    compare.add_argument(
        "--also-evaluate",
        default="external,val",
        help="also run every row on these split folders if present, comma-separated ('' to skip)",
    )
    compare.add_argument(
        "--render-only", action="store_true", help="rebuild the report from <plots-dir>/comparison.json"
    )

    bench = sub.add_parser(
        "bench", help="speed on this CPU: ONNX Runtime (and TensorFlow) per model, GEMM ceiling, JPEG decode"
    )
    bench.add_argument("--artifact", action="append", default=[], help="artifact folder (repeatable)")
    bench.add_argument("--threads", type=int, default=2)
    bench.add_argument("--runs", type=int, default=100, help="most timed runs per measurement at batch 1")
    bench.add_argument("--search", action="append", default=[], help="also every artifact under this folder")
    bench.add_argument(
        "--architectures",
        default="",
        help="comma-separated, or 'all': architectures with no artifact given are exported with random "
        "weights to measure speed only",
    )
    bench.add_argument("--batches", default="1,16")
    bench.add_argument("--budget", type=float, default=8.0, help="seconds per measurement (after min. 5 runs)")
    bench.add_argument("--tensorflow", action="store_true", help="also time each model through tf.function")
    bench.add_argument("--decode", action="store_true", help="also JPEG decode: naive vs draft")
    bench.add_argument("--films-dir", help="full-size films for --decode (default $PNEUMONIA_BENCH_FILMS)")
    bench.add_argument(
        "--quantize", action="store_true", help="int8 variants of the first model, AUC on its validation split"
    )
    bench.add_argument(
        "--variants",
        action="store_true",
        help="the serving variants (fp32, int8, bf16) of the first model checked on <data>/external, with the "
        "choice the worker would make on this CPU (ml/serving/variants.py)",
    )
    _add_data_flags(bench)
    bench.add_argument("--workdir", default="var/bench", help="exported and quantized models go here")
    bench.add_argument("--json", help="write the full report here")

    calibrate = sub.add_parser(
        "calibrate", help="fold Platt scaling fitted on external/ into the model; threshold for a sensitivity there"
    )
    _add_data_flags(calibrate)
    calibrate.add_argument("--artifact", required=True)
    calibrate.add_argument("--split", default="external")
    calibrate.add_argument("--min-sensitivity", type=float, default=0.95)
    calibrate.add_argument("--bootstrap", type=int, default=1000)

    gate = sub.add_parser("gate", help="the input gate: fit it into an artifact, make the non-chest corpus, report")
    _add_data_flags(gate)
    gate.add_argument("--artifact", help="artifact folder (fit writes gate.onnx and the manifest entry there)")
    gate.add_argument("--fit", action="store_true", help="fit the learned check on the artifact's training films")
    gate.add_argument("--make-corpus", metavar="DIR", help="write the project's non-chest corpus here")
    gate.add_argument(
        "--report",
        action="store_true",
        help="run the gate on the validation split, external/ and val/ (if present) and on --corpus",
    )
    gate.add_argument("--corpus", action="append", default=[], help="a folder of files that must all be refused")
    gate.add_argument("--output", help="also write the report JSON here")

    variants = sub.add_parser(
        "variants",
        help="check fp32/int8/bf16 variants of a model on external/ on this CPU and cache the one to serve",
    )
    _add_data_flags(variants)
    variants.add_argument("--artifact", required=True)
    variants.add_argument(
        "--cache-dir", help="where choices and variant files go (default $PNEUMONIA_VARIANT_CACHE_DIR or var/variants)"
    )
    variants.add_argument("--threads", type=int, help="intra-op threads, as the worker runs (default: ONNX Runtime's)")
    variants.add_argument("--spin", action="store_true", help="let idle threads spin, as INFERENCE_SPIN=1 does")
    variants.add_argument("--calibration-films", type=int, default=128)
    variants.add_argument("--force", action="store_true", help="measure again even if a choice is cached")
    variants.add_argument("--json", help="also write the record here")

    split = sub.add_parser("split", help="show the patient-grouped split; optionally write the file list")
    _add_data_flags(split)
    split.add_argument("--val-fraction", type=float, default=0.2)
    split.add_argument("--seed", type=int, default=1337)
    split.add_argument("--write", help="write 'split<TAB>class<TAB>path<TAB>patient' lines here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(name)s %(message)s"
    )
    handler = {
        "train": _train,
        "evaluate": _evaluate,
        "export": _export,
        "compare": _compare,
        "bench": _bench,
        "split": _split,
        "gate": _gate,
        "calibrate": _calibrate,
        "teacher-scores": _teacher_scores,
        "heatmaps": _heatmaps,
        "variants": _variants,
    }
    return handler[args.command](args)


def _teacher_scores(args: argparse.Namespace) -> int:
    """Distillation targets: the teachers' mean Keras score on every film of a split, without the
    calibration a teacher was given on external/ (never train on anything fitted there)."""
    import numpy as np

    from ml.serving import films
    from ml.serving.artifacts import read_manifest
    from ml.training.evaluation import keras_probabilities

    data_dir = require_dir(args.data_dir, DATA_DIR_ENV, what="Data directory")
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


def _output_root(args: argparse.Namespace) -> Path:
    return Path(args.output_root or os.environ.get(ARTIFACTS_DIR_ENV) or DEFAULT_ARTIFACTS_DIR)


def _train(args: argparse.Namespace) -> int:
    from ml.training import training
    from ml.training.architectures import ARCHITECTURES, WeightsNotFoundError

    if args.arch not in ARCHITECTURES:
        raise SystemExit(f"Unknown architecture '{args.arch}'; choose from {', '.join(sorted(ARCHITECTURES))}")
    stages = _parse_stages(args.fine_tune)
    config = TrainConfig(
        architecture=args.arch,
        input_size=args.input_size or ARCHITECTURES[args.arch].default_input_size,
        weights=args.weights,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        fine_tune_stages=stages,
        val_fraction=args.val_fraction,
        seed=args.seed,
        max_train_images=args.max_train_images,
        max_val_images=args.max_val_images,
        class_weighting=args.class_weighting,
        augment=not args.no_augment,
        augmentation_policy=args.augmentation,
        early_stopping_patience=args.patience,
        bootstrap_samples=args.bootstrap,
        name=args.name,
        split_seed=args.split_seed,
        init_weights=args.init_weights,
        soft_labels=args.soft_labels,
        distill_alpha=args.distill_alpha,
        max_fit_seconds=args.max_fit_minutes * 60 if args.max_fit_minutes else None,
        precision=args.precision,
        pool_margin=args.pool_margin,
    )
    config.optimizer = args.optimizer
    data_dir = require_dir(args.data_dir, DATA_DIR_ENV, what="Data directory")
    weights_dir = resolve_dir(args.weights_dir, WEIGHTS_DIR_ENV, required=False, what="Weights directory")
    root = _output_root(args)
    try:
        artifact = training.train(
            config,
            data_dir=data_dir,
            output_root=root,
            weights_dir=weights_dir,
            cache_dir=Path(args.cache_dir) if args.cache_dir else root / "cache",
            resume_dir=Path(args.resume_dir) if args.resume_dir else None,
        )
    except (WeightsNotFoundError, training.ResumeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from ml.serving.artifacts import read_manifest

    manifest = read_manifest(artifact)
    val = manifest["metrics"]["validation"]
    print(
        json.dumps(
            {
                "artifact": str(artifact),
                "roc_auc": val["roc_auc"],
                "roc_auc_ci95": val.get("ci95", {}).get("roc_auc"),
                "sensitivity": val["sensitivity"],
                "specificity": val["specificity"],
                "threshold": manifest["threshold"],
                "latency_p50_ms": (manifest["metrics"]["latency"] or {}).get("p50_ms"),
                "training_seconds": manifest["training_seconds"],
                "trained_on": manifest["trained_on"],
                "onnx_pending": manifest.get("onnx_pending"),
            },
            indent=2,
        )
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from ml.serving.inference import ModelArtifactError
    from ml.training.evaluation import evaluate_artifact

    data_dir = require_dir(args.data_dir, DATA_DIR_ENV, what="Data directory")
    try:
        if args.keras:
            from ml.training.evaluation import evaluate_keras_artifact

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


def _export(args: argparse.Namespace) -> int:
    from ml.training.packaging import package_artifact

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


def _compare(args: argparse.Namespace) -> int:
    from ml.training.comparison import run_comparison

    data_dir = require_dir(args.data_dir, DATA_DIR_ENV, what="Data directory")
    weights_dir = resolve_dir(args.weights_dir, WEIGHTS_DIR_ENV, required=False, what="Weights directory")
    root = _output_root(args) / "compare"
    report = run_comparison(
        budget=args.budget,
        only=args.only.split(",") if args.only else None,
        data_dir=data_dir,
        weights_dir=weights_dir,
        output_root=root,
        cache_dir=Path(args.cache_dir) if args.cache_dir else _output_root(args) / "cache",
        report_path=Path(args.report),
        plots_dir=Path(args.plots_dir),
        seed=args.seed,
        render_only=args.render_only,
        also_evaluate=args.also_evaluate or None,
    )
    print(report)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from benchmarks import models as bench  # benchmark code lives in benchmarks/, not in the ml library
    from ml.serving.inference import Predictor

    artifacts = list(args.artifact) or (["ml/default_model"] if not args.search else [])
    for artifact in artifacts:
        Predictor.from_artifact(artifact)  # verifies the file before timing it
    names = [name for name in args.architectures.split(",") if name]
    if names == ["all"]:
        names = list(bench.SPEED_ONLY_ARCHITECTURES)
    if names:
        from ml.training.architectures import ARCHITECTURES  # imports Keras: only when exporting

        unknown = [name for name in names if name not in ARCHITECTURES]
        if unknown:
            raise SystemExit(f"Unknown architecture(s) {unknown}; choose from {', '.join(sorted(ARCHITECTURES))}")
    films_dir = args.films_dir or os.environ.get("PNEUMONIA_BENCH_FILMS")
    films = sorted(p for p in Path(films_dir).rglob("*") if p.suffix.lower() in (".jpeg", ".jpg")) if films_dir else []
    data_dir = None
    if args.quantize or args.variants:
        data_dir = require_dir(args.data_dir, DATA_DIR_ENV, what="Data directory")
    extras = args.search or names or args.tensorflow or args.decode or args.quantize or len(artifacts) > 1
    report = bench.run_benchmark(
        artifacts=artifacts,
        search=args.search,
        architectures=names,
        threads=args.threads,
        batches=[int(b) for b in args.batches.split(",")],
        max_runs=args.runs,
        budget_s=args.budget,
        tensorflow=args.tensorflow,
        profile=bool(extras),
        variants=bool(extras),
        decode=args.decode,
        films=films,
        quantize_data_dir=data_dir if args.quantize else None,
        serving_variants_data_dir=data_dir if args.variants else None,
        workdir=Path(args.workdir),
        log=(lambda message: print(f"[bench] {message}", file=sys.stderr)) if args.verbose else (lambda _: None),
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(bench.render_text(report))
    return 0


def _variants(args: argparse.Namespace) -> int:
    from ml.serving import variants

    data_dir = require_dir(args.data_dir, DATA_DIR_ENV, what="Data directory")
    entry = variants.select(
        args.artifact,
        data_dir=data_dir,
        cache_dir=Path(args.cache_dir) if args.cache_dir else variants.cache_dir_from_env("var/variants"),
        threads=args.threads,
        spin=args.spin,
        calibration_count=args.calibration_films,
        force=args.force,
        log=(lambda message: print(f"[variants] {message}", file=sys.stderr)) if args.verbose else (lambda _: None),
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(entry, indent=2) + "\n", encoding="utf-8")
    print(variants.render(entry))
    return 0


def _split(args: argparse.Namespace) -> int:
    from ml.serving import films
    from ml.training import data

    data_dir = require_dir(args.data_dir, DATA_DIR_ENV, what="Data directory")
    records = films.list_images(data_dir, "train")
    train, val = data.grouped_split(records, val_fraction=args.val_fraction, seed=args.seed)
    overlap = {r.patient for r in train} & {r.patient for r in val}
    summary = {
        "train": {"images": len(train), "patients": len({r.patient for r in train}), **data.class_counts(train)},
        "validation": {"images": len(val), "patients": len({r.patient for r in val}), **data.class_counts(val)},
        "patients_in_both": len(overlap),
        "class_weights_balanced": data.balanced_class_weights(train),
    }
    if args.write:
        lines = [
            f"{name}\t{data.CLASS_NAMES[r.label]}\t{r.relpath(data_dir)}\t{r.patient}"
            for name, rs in (("train", train), ("validation", val))
            for r in rs
        ]
        Path(args.write).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=2))
    return 0


def _heatmaps(args: argparse.Namespace) -> int:
    from ml.training.evaluation import heatmap_placement

    data_dir = require_dir(args.data_dir, DATA_DIR_ENV, what="Data directory")
    print(json.dumps(heatmap_placement(args.artifact, data_dir, args.split, figure=args.figure), indent=2))
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from ml.training.calibration import calibrate_artifact

    data_dir = require_dir(args.data_dir, DATA_DIR_ENV, what="Data directory")
    summary = calibrate_artifact(
        args.artifact,
        data_dir,
        split=args.split,
        min_sensitivity=args.min_sensitivity,
        bootstrap_samples=args.bootstrap,
    )
    print(json.dumps(summary, indent=2))
    return 0


def _gate(args: argparse.Namespace) -> int:
    from ml.serving import films
    from ml.training import data, gate_fit, nonchest

    if args.make_corpus:
        written = nonchest.write_corpus(args.make_corpus)
        print(f"{len(written)} files in {args.make_corpus}")
    if (args.fit or args.report) and not args.artifact:
        raise SystemExit("--fit and --report need --artifact")
    if args.fit:
        print(
            json.dumps(
                gate_fit.fit_artifact_gate(
                    args.artifact, require_dir(args.data_dir, DATA_DIR_ENV, what="Data directory")
                ),
                indent=2,
            )
        )
    if args.report:
        from ml.serving.artifacts import read_manifest

        folders: dict[str, list[Path]] = {}
        data_dir = resolve_dir(args.data_dir, DATA_DIR_ENV, required=False, what="Data directory")
        if data_dir is not None:  # chest films: the validation split, external/ and val/
            config = read_manifest(args.artifact).get("config", {})
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
        report = gate_fit.gate_report(args.artifact, folders)
        text = json.dumps(report, indent=2)
        if args.output:
            Path(args.output).write_text(text + "\n", encoding="utf-8")
        print(text)
    return 0
