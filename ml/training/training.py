"""Train one architecture on the patient-grouped split and write a versioned artifact."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ml.serving import artifacts, films
from ml.serving.settings import add_data_dir_argument, require_data_dir, resolve_dir
from ml.training import data, evaluation, export, gate_fit
from ml.training.architectures import (
    ARCHITECTURES,
    BuiltModel,
    WeightsNotFoundError,
    build_model,
    resolve_weights,
    set_trainable,
)
from ml.training.config import (
    ARTIFACTS_DIR_ENV,
    AUGMENTATION_POLICIES,
    DEFAULT_ARTIFACTS_DIR,
    WEIGHTS_DIR_ENV,
    StageConfig,
    TrainConfig,
    vgg19_progressive_stages,
)
from ml.training.progress import ProgressCallback, ProgressHook, TrainingCancelled, describe_device

__all__ = ["TrainingCancelled", "describe_device", "train"]
from ml.serving.preprocessing import PREPROCESSING_VERSION

log = logging.getLogger(__name__)

INTENDED_USE = (
    "Decision support for clinicians reviewing pediatric (age 1-5) frontal chest radiographs: "
    "scores how strongly a film suggests pneumonia (bacterial or viral) rather than a normal film (a "
    "calibrated probability only where the model card says so, else an AI score). Not a "
    "diagnosis; not validated on adults, lateral views, or other devices and sites. Films that are "
    "not frontal chest radiographs are refused by the input gate. Every prediction must be "
    "reviewed by a qualified clinician."
)
PARITY_IMAGES = 64


@dataclass
class SplitData:
    train: list[films.ImageRecord]
    val: list[films.ImageRecord]
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def load_split(config: TrainConfig, data_dir: Path, extra_train_records: Sequence[films.ImageRecord] = ()) -> SplitData:
    records = films.list_images(data_dir, "train")
    split_seed = config.patient_split_seed
    train, val = data.grouped_split(records, val_fraction=config.val_fraction, seed=split_seed)
    train = data.subsample(train, limit=config.max_train_images, seed=split_seed)
    # Extra films (clinician-confirmed uploads) only ever train: validation stays comparable across runs.
    train = [*train, *extra_train_records]
    val = data.subsample(val, limit=config.max_val_images, seed=split_seed)
    size = config.input_size
    y_train = films.labels_of(train)
    if config.soft_labels:
        teacher = read_soft_labels(Path(config.soft_labels), data_dir, train)
        y_train = ((1 - config.distill_alpha) * y_train + config.distill_alpha * teacher).astype(np.float32)
    return SplitData(
        train,
        val,
        films.load_images(train, input_size=size),
        y_train,
        films.load_images(val, input_size=size),
        films.labels_of(val),
    )


def read_soft_labels(path: Path, data_dir: Path, records: Sequence[films.ImageRecord]) -> np.ndarray:
    """A teacher's probability for each training film, from 'relpath<TAB>probability' lines.

    Every training film must have one: a teacher that skipped films would silently turn them into
    hard labels."""
    scores: dict[str, float] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            relpath, probability = line.split("\t")
            scores[relpath] = float(probability)
    missing = [r.relpath(data_dir) for r in records if r.relpath(data_dir) not in scores]
    if missing:
        raise ValueError(f"{path}: no teacher score for {len(missing)} training films, e.g. {missing[0]}")
    return np.array([scores[r.relpath(data_dir)] for r in records], dtype=np.float32)


def train(
    config: TrainConfig,
    *,
    data_dir: Path,
    output_root: Path,
    weights_dir: Path | None = None,
    cache_dir: Path | None = None,
    latency_runs: int = 30,
    extra_train_records: Sequence[films.ImageRecord] = (),
    progress: ProgressHook | None = None,
    resume_dir: Path | None = None,
) -> Path:
    """Train, evaluate on validation, export; returns the artifact directory.

    `progress`, if given, receives a dict after every epoch and now and then within one
    (see ProgressCallback); it may raise TrainingCancelled to stop the run.
    `resume_dir`: a folder that keeps the run's progress (RunCheckpoints) so that the same command,
    run again after the process was killed or the machine changed, goes on from the last finished
    epoch instead of starting over.
    """

    started = time.perf_counter()
    code_version = artifacts.code_version()  # at start: the tree may change during a long run
    weights = resolve_weights(config.architecture, config.weights, weights_dir)
    split = load_split(config, data_dir, extra_train_records)
    load_seconds = time.perf_counter() - started
    artifact_dir, version = artifacts.new_artifact_dir(output_root, config.architecture)
    try:
        return _train_into(
            artifact_dir,
            version,
            config,
            split,
            data_dir,
            weights,
            code_version,
            started,
            load_seconds,
            cache_dir,
            latency_runs,
            progress,
            resume_dir,
        )
    except BaseException:
        shutil.rmtree(artifact_dir, ignore_errors=True)  # a cancelled or failed run leaves no half artifact
        raise


def _train_into(
    artifact_dir: Path,
    version: str,
    config: TrainConfig,
    split: SplitData,
    data_dir: Path,
    weights: str | None,
    code_version: str,
    started: float,
    load_seconds: float,
    cache_dir: Path | None,
    latency_runs: int,
    progress: ProgressHook | None,
    resume_dir: Path | None = None,
) -> Path:
    import keras

    file_lines = data.data_file_lines(data_dir, {"train": split.train, "validation": split.val})
    list_name, list_digest = artifacts.write_data_file_list(artifact_dir, file_lines)
    run = RunCheckpoints.open(resume_dir or artifact_dir / "checkpoints", config=config, list_digest=list_digest)

    keras.utils.set_random_seed(config.seed)
    pretrained = weights is not None or bool(config.init_weights)
    precision = precision_policy(config.precision)
    keras.mixed_precision.set_global_policy(precision)
    try:
        built = _build(config, weights=weights, pretrained=pretrained)
        if config.init_weights:
            built.model.load_weights(config.init_weights)
        class_weight = data.balanced_class_weights(split.train) if config.class_weighting == "balanced" else None
        fit_started = time.perf_counter()
        history = run_stages(built, config, split, class_weight, pretrained, run, cache_dir, list_digest, progress)
        fit_seconds = time.perf_counter() - fit_started
    finally:
        keras.mixed_precision.set_global_policy("float32")
    if precision != "float32":
        # Trained with 16-bit activations: the same weights (kept in float32) in a float32 model, which is
        # what is saved, exported and served.
        trained_weights = run.folder / "trained.weights.h5"
        built.model.save_weights(trained_weights)
        built = _build(config, weights=None, pretrained=pretrained)
        built.model.load_weights(trained_weights)

    keras_path = artifact_dir / artifacts.KERAS_NAME
    built.model.save(keras_path)
    onnx_path: Path | None
    heatmap: dict[str, Any] | None
    if exports_onnx_here():
        exported = export.export_verified(built.model, artifact_dir / artifacts.ONNX_NAME, split.x_val[:PARITY_IMAGES])
        onnx_path, parity, heatmap = exported.path, exported.parity, exported.heatmap
        # Validation metrics come from the exported ONNX model: the model the portal serves.
        val_prob = export.onnx_predict(export.onnx_session(onnx_path), split.x_val)
    else:
        # Trained on another Keras backend (PyTorch on a GPU): ONNX export needs TensorFlow, so
        # `python -m ml export` re-exports on a TensorFlow machine, checks parity and re-evaluates
        # (and records the heatmap output then).
        onnx_path, parity, heatmap = None, None, None
        val_prob = built.model.predict(split.x_val, batch_size=64, verbose=0).reshape(-1)
    threshold = evaluation.choose_threshold(split.y_val, val_prob, rule=config.threshold_rule)
    metrics = evaluation.evaluate_predictions(
        split.y_val,
        val_prob,
        threshold,
        groups=[r.patient for r in split.val],
        bootstrap_samples=config.bootstrap_samples,
        seed=config.seed,
    )
    plots = evaluation.save_plots(split.y_val, val_prob, artifact_dir, title=config.architecture)
    latency = export.measure_latency(onnx_path, config.input_size, runs=latency_runs) if onnx_path else None
    np.save(artifact_dir / "val_probabilities.npy", val_prob.astype(np.float32))

    manifest = {
        "name": config.name or f"{config.architecture}-{config.input_size}px",
        "version": version,
        "architecture": config.architecture,
        "input_size": config.input_size,
        "preprocessing_version": PREPROCESSING_VERSION,
        "class_names": artifacts.CLASS_NAMES,
        "threshold": threshold,
        "threshold_rule": f"{config.threshold_rule} on the validation split",
        "metrics": {"validation": metrics, "onnx_keras_max_abs_diff": parity, "latency": latency},
        "weights": {"requested": config.weights, "source": _weights_label(weights, config.init_weights)},
        "data": {
            "data_dir": str(data_dir),
            "source_split": "train",
            "split_method": (
                f"StratifiedGroupKFold(n_splits={max(2, round(1 / config.val_fraction))}, shuffle=True, "
                f"random_state={config.seed}) grouped by patient id from file names; first fold = validation"
            ),
            "counts": {"train": data.class_counts(split.train), "validation": data.class_counts(split.val)},
            "patients": {
                "train": len({r.patient for r in split.train}),
                "validation": len({r.patient for r in split.val}),
            },
            "class_weighting": {"method": config.class_weighting, "weights": class_weight},
            "max_train_images": config.max_train_images,
            "file_list": list_name,
            "file_list_sha256": list_digest,
        },
        "config": config.to_dict(),
        "history": history,
        "code_version": code_version,
        "training_seconds": round(fit_seconds, 1),
        "trained_on": {"backend": keras.backend.backend(), "device": describe_device(), "precision": precision},
        "timing_seconds": {
            "load_images": round(load_seconds, 1),
            "fit": round(fit_seconds, 1),
            "total": round(time.perf_counter() - started, 1),
        },
        "created_at": artifacts.utc_now_iso(),
        "intended_use": INTENDED_USE,
        "plots": plots,
        "files": {"onnx": artifacts.ONNX_NAME, "keras": artifacts.KERAS_NAME},
        "onnx_sha256": artifacts.sha256_file(onnx_path) if onnx_path else None,
        "keras_sha256": artifacts.sha256_file(keras_path),
        # The ONNX graph's class activation map output, or None: this architecture gives no heatmap.
        "heatmap": heatmap,
    }
    if onnx_path is None:
        manifest["onnx_pending"] = (
            f"trained on the {keras.backend.backend()} backend: run `python -m ml export --artifact <this folder>` "
            "with TensorFlow to write and verify model.onnx; validation figures above are Keras predictions"
        )
    artifacts.write_manifest(artifact_dir, manifest)
    # The input gate is part of the artifact: no model serves without it (ml.serving.gate).
    gate_fit.fit_artifact_gate(artifact_dir, data_dir)
    run.finish(artifact_dir)
    return artifact_dir


def _build(config: TrainConfig, *, weights: str | None, pretrained: bool) -> BuiltModel:
    """The run's model as its config describes it (the 16-bit run is rebuilt in float32 the same way)."""
    return build_model(
        config.architecture,
        input_size=config.input_size,
        weights=weights,
        seed=config.seed,
        pretrained=pretrained,
        pool_margin=config.pool_margin,
    )


def precision_policy(requested: str) -> str:
    """The Keras dtype policy to train with: "auto" is mixed_float16 on a GPU (tensor cores; Keras scales
    the loss), float32 on a CPU, where float16 is slower, not faster."""
    if requested != "auto":
        if requested not in ("float32", "mixed_float16", "mixed_bfloat16"):
            raise ValueError(f"Unknown precision '{requested}': auto, float32, mixed_float16 or mixed_bfloat16")
        return requested
    return "mixed_float16" if describe_device().startswith("GPU") else "float32"


def exports_onnx_here() -> bool:
    """ONNX export (tf2onnx) needs the TensorFlow backend."""
    import keras

    return keras.backend.backend() == "tensorflow"


def _weights_label(weights: str | None, init_weights: str | None = None) -> str:
    if init_weights:
        return f"initialised from {Path(init_weights).name} sha256={artifacts.sha256_file(init_weights)}"
    if weights is None:
        return "none (random initialisation, trained from scratch)"
    if weights == "imagenet":
        return "imagenet (Keras download)"
    return f"{Path(weights).name} sha256={artifacts.sha256_file(weights)}"


def stages_for(config: TrainConfig, pretrained: bool) -> list[StageConfig]:
    """Pretrained: head on cached features, then the configured fine-tuning stages.

    From scratch there is nothing to keep frozen, so every layer trains from the start.
    """
    optimizer = config.optimizer
    if not pretrained:
        return [StageConfig("full", config.epochs, config.learning_rate, optimizer)]
    return [StageConfig("head", config.epochs, config.learning_rate, optimizer), *config.fine_tune_stages]


def run_stages(
    built: BuiltModel,
    config: TrainConfig,
    split: SplitData,
    class_weight: dict[int, float] | None,
    pretrained: bool,
    run: RunCheckpoints,
    cache_dir: Path | None,
    list_digest: str,
    progress: ProgressHook | None = None,
) -> list[dict[str, Any]]:
    history: list[dict[str, Any]] = []
    budget = TimeBudget(config.max_fit_seconds)
    for stage in stages_for(config, pretrained):
        if stage.epochs <= 0:
            continue
        finished = run.finished_stage(stage.name)
        if finished is not None:  # a resumed run: this stage's best weights are on disk
            built.model.load_weights(run.stage_weights(stage.name))
            history.append({**finished, "resumed": "finished before the restart"})
            log.info("stage %s: finished before the restart, weights loaded", stage.name)
            continue
        if budget.spent() and history:  # the first stage always trains at least one epoch
            history.append({"stage": stage.name, "skipped": "time budget spent"})
            continue
        set_trainable(built, stage.name)
        started = time.perf_counter()
        if stage.name == "head" and built.backbone is not None:
            record = _fit_head_on_cached_features(
                built, config, stage, split, class_weight, run, cache_dir, list_digest, progress, budget
            )
        else:
            record = _fit_end_to_end(built, config, stage, split, class_weight, run, progress, budget)
        record["stopped_by_time_budget"] = budget.stopped_training
        budget.stopped_training = False
        record.update(
            {
                "stage": stage.name,
                "optimizer": stage.optimizer,
                "learning_rate": stage.learning_rate,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        run.finish_stage(stage.name, built.model, record)
        history.append(record)
        log.info("stage %s done: %s", stage.name, record)
    return history


class RunCheckpoints:
    """A training run's progress on disk, so that a killed run goes on where it stopped.

    Per stage: Keras' BackupAndRestore keeps the model, the optimizer (learning rate included) and the
    epoch after every epoch; `<stage>.best.weights.h5` the best epoch so far (ModelCheckpoint, whose
    best score is written beside it so that a resumed stage does not forget it); when the stage ends,
    `<stage>.weights.h5` and its history record in run.json. The run's configuration and training file
    list are recorded too: resuming with other settings or other data is refused, not mixed. When the
    artifact is written, run.json names it and a further resume is refused.
    """

    STATE = "run.json"

    def __init__(self, folder: Path, state: dict[str, Any]) -> None:
        self.folder = folder
        self.state = state

    @classmethod
    def open(cls, folder: Path, *, config: TrainConfig, list_digest: str) -> RunCheckpoints:
        folder.mkdir(parents=True, exist_ok=True)
        # The time budget may change between sessions (it is how long this session may fit), nothing else.
        settings = {key: value for key, value in config.to_dict().items() if key != "max_fit_seconds"}
        identity = {"config": json.loads(json.dumps(settings, default=str)), "file_list_sha256": list_digest}
        path = folder / cls.STATE
        if path.is_file():
            state = json.loads(path.read_text(encoding="utf-8"))
            if state.get("artifact"):
                raise ResumeError(f"The run in {folder} already finished: its artifact is {state['artifact']}.")
            if state["identity"] != identity:
                changed = sorted(
                    key
                    for key in set(state["identity"]["config"]) | set(identity["config"])
                    if state["identity"]["config"].get(key) != identity["config"].get(key)
                )
                if state["identity"]["file_list_sha256"] != list_digest:
                    changed.append("training/validation files")
                raise ResumeError(
                    f"The run in {folder} was started with other settings ({', '.join(changed)}); "
                    "resume it with the same command, or use a new folder."
                )
            log.info("resuming the run in %s (stages finished: %s)", folder, list(state["stages"]) or "none")
        else:
            state = {"identity": identity, "stages": {}}
        run = cls(folder, state)
        run._save()
        return run

    def finished_stage(self, stage: str) -> dict[str, Any] | None:
        return self.state["stages"].get(stage)

    def stage_weights(self, stage: str) -> Path:
        return self.folder / f"{stage}.weights.h5"

    def best_weights(self, stage: str) -> Path:
        return self.folder / f"{stage}.best.weights.h5"

    def backup_dir(self, stage: str) -> Path:
        return self.folder / f"{stage}.backup"

    def best_score(self, stage: str) -> float | None:
        path = self.folder / f"{stage}.best.json"
        return float(json.loads(path.read_text())["val_auc"]) if path.is_file() else None

    def epoch_scores(self, stage: str) -> list[float]:
        """The stage's validation AUC by epoch, those before a restart included."""
        path = self.folder / f"{stage}.epochs.json"
        return [float(v) for v in json.loads(path.read_text())["val_auc"]] if path.is_file() else []

    def record_epoch(self, stage: str, epoch: int, score: float) -> None:
        # Epoch `epoch` (0-based) trained again after a restart replaces what came after it.
        scores = self.epoch_scores(stage)[:epoch] + [float(score)]
        (self.folder / f"{stage}.epochs.json").write_text(json.dumps({"val_auc": scores}))

    def callbacks(self, stage: str) -> list[Any]:
        import keras

        run = self

        class RecordBest(keras.callbacks.Callback):
            # After ModelCheckpoint in the list: the best score survives a restart with the weights,
            # and every epoch's score with them, so that the stage's history is whole after a resume.
            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                score = (logs or {}).get("val_auc")
                if score is None:
                    return
                run.record_epoch(stage, epoch, score)
                best = run.best_score(stage)
                if best is None or score > best:
                    (run.folder / f"{stage}.best.json").write_text(json.dumps({"val_auc": float(score)}))

        previous_best = self.best_score(stage)
        return [
            keras.callbacks.ModelCheckpoint(
                str(self.best_weights(stage)),
                monitor="val_auc",
                mode="max",
                save_best_only=True,
                save_weights_only=True,
                initial_value_threshold=previous_best,
            ),
            RecordBest(),
            keras.callbacks.BackupAndRestore(str(self.backup_dir(stage)), delete_checkpoint=True),
        ]

    def finish_stage(self, stage: str, model: Any, record: dict[str, Any]) -> None:
        model.save_weights(self.stage_weights(stage))
        self.state["stages"][stage] = record
        self._save()

    def finish(self, artifact_dir: Path) -> None:
        self.state["artifact"] = str(artifact_dir)
        self._save()
        # Nothing left to resume: keep run.json (it names the artifact), drop the weights.
        for path in self.folder.iterdir():
            if path.name != self.STATE:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        if self.folder.parent == artifact_dir:  # no resume folder was asked for: checkpoints are scratch
            shutil.rmtree(self.folder, ignore_errors=True)

    def _save(self) -> None:
        temporary = self.folder / (self.STATE + ".tmp")
        temporary.write_text(json.dumps(self.state, indent=2, default=str), encoding="utf-8")
        temporary.replace(self.folder / self.STATE)


class ResumeError(RuntimeError):
    """A resume folder that belongs to another run, or to one that already finished."""


def _optimizer(stage: StageConfig) -> Any:
    import keras

    if stage.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=stage.learning_rate, momentum=0.9)
    return keras.optimizers.Adam(learning_rate=stage.learning_rate)


class TimeBudget:
    """A wall-clock budget over all stages: ends an epoch's fit when spent (best weights are kept)."""

    def __init__(self, seconds: float | None) -> None:
        self.deadline = None if seconds is None else time.monotonic() + seconds
        self.stopped_training = False

    def spent(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def callback(self) -> Any:
        import keras

        budget = self

        class StopWhenSpent(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                if budget.spent():
                    budget.stopped_training = True
                    self.model.stop_training = True

        return StopWhenSpent()


def _callbacks(
    config: TrainConfig, run: RunCheckpoints, stage: StageConfig, progress: ProgressHook | None, budget: TimeBudget
) -> list[Any]:
    import keras

    reporting = [ProgressCallback(progress, stage=stage.name, epochs=stage.epochs)] if progress else []
    return reporting + [
        budget.callback(),
        keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=config.early_stopping_patience),
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.3, patience=config.reduce_lr_patience, min_lr=1e-6
        ),
        *run.callbacks(stage.name),
    ]


def _compile(model: Any, stage: StageConfig) -> None:
    import keras

    model.compile(
        optimizer=_optimizer(stage), loss="binary_crossentropy", metrics=[keras.metrics.AUC(name="auc"), "accuracy"]
    )


def _summarise(fit_history: Any, run: RunCheckpoints, stage: str) -> dict[str, Any]:
    """The stage's epochs, with those trained before a restart (run.epoch_scores) counted in."""
    this_process = [float(v) for v in fit_history.history.get("val_auc", [])]
    scores = run.epoch_scores(stage)  # RecordBest wrote this process's epochs there too
    if not scores:  # resumed after its last epoch: nothing left to fit
        return {"epochs_run": 0}
    best = int(np.argmax(scores))
    record: dict[str, Any] = {
        "epochs_run": len(scores),
        "best_epoch": best + 1,
        "best_val_auc": scores[best],
        "val_auc_by_epoch": [round(v, 4) for v in scores],
    }
    if len(scores) > len(this_process):
        # Keras' EarlyStopping counts its patience again from the restart.
        record["epochs_before_restart"] = len(scores) - len(this_process)
    return record


def _fit_head_on_cached_features(
    built, config, stage, split, class_weight, run, cache_dir, list_digest, progress, budget
):
    # A frozen backbone gives the same features every epoch: compute them once (augmentation
    # would change them, so this stage trains without it) and an epoch costs seconds.
    extract_started = time.perf_counter()
    f_train, train_hit = cached_features(built, split.x_train, split.train, "train", config, cache_dir, list_digest)
    f_val, val_hit = cached_features(built, split.x_val, split.val, "validation", config, cache_dir, list_digest)
    # Recorded so a row whose features came from a warm cache is not mistaken for a cheap one.
    feature_record = {
        "feature_seconds": round(time.perf_counter() - extract_started, 1),
        "feature_cache_hits": int(train_hit) + int(val_hit),
    }
    _compile(built.head, stage)
    fit = built.head.fit(
        f_train,
        split.y_train,
        validation_data=(f_val, split.y_val),
        epochs=stage.epochs,
        batch_size=config.batch_size,
        class_weight=class_weight,
        callbacks=_callbacks(config, run, stage, progress, budget),
        verbose=2,
        shuffle=True,
    )
    built.head.load_weights(run.best_weights(stage.name))
    return {**_summarise(fit, run, stage.name), "features_cached": True, "augmentation": False, **feature_record}


def _fit_end_to_end(built, config, stage, split, class_weight, run, progress, budget):
    from ml.training import batches

    train_ds = batches.make_dataset(
        split.x_train,
        split.y_train,
        batch_size=config.batch_size,
        training=True,
        augment=config.augment,
        policy=config.augmentation_policy,
        seed=config.seed,
    )
    val_ds = batches.make_dataset(
        split.x_val, split.y_val, batch_size=64, training=False, augment=False, seed=config.seed
    )
    _compile(built.model, stage)
    fit = built.model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=stage.epochs,
        class_weight=class_weight,
        callbacks=_callbacks(config, run, stage, progress, budget),
        verbose=2,
        shuffle=False,
    )
    built.model.load_weights(run.best_weights(stage.name))
    augmentation = config.augmentation_policy if config.augment else False
    return {**_summarise(fit, run, stage.name), "features_cached": False, "augmentation": augmentation}


def cached_features(built, images, records, split_name, config, cache_dir, list_digest):
    """(features, cache hit?) memoised on disk by (arch, size, weights, warm start, pooling margin,
    preprocessing, files): two warm starts, or two margins, of one architecture pool different features."""
    key_text = "|".join(
        [
            config.architecture,
            str(config.input_size),
            str(built.weights_source),
            _weights_label(built.weights_source, config.init_weights),
            f"pool_margin={config.pool_margin}",
            PREPROCESSING_VERSION,
            str(built.model.dtype_policy.name),  # float16 features are not float32 ones
            split_name,
            list_digest,
            hashlib.sha256("\n".join(str(r.path) for r in records).encode()).hexdigest(),
        ]
    )
    key = hashlib.sha256(key_text.encode()).hexdigest()[:24]
    path = Path(cache_dir) / f"features-{config.architecture}-{key}.npy" if cache_dir else None
    if path is not None and path.is_file():
        log.info("feature cache hit %s", path)
        return np.load(path), True
    features = built.features.predict(images, batch_size=32, verbose=0)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, features)
    return features, False


# --- python -m ml train -------------------------------------------------------------------------


def add_run_folder_arguments(parser: argparse.ArgumentParser) -> None:
    """The folders and split flags a training run reads (train and compare)."""
    add_data_dir_argument(parser)
    parser.add_argument("--weights-dir", help=f"folder of local ImageNet weights (default ${WEIGHTS_DIR_ENV})")
    parser.add_argument("--output-root", help=f"where versioned artifacts go (default ${ARTIFACTS_DIR_ENV} or runs/)")
    parser.add_argument("--cache-dir", help="where backbone features are memoised (default <output-root>/cache)")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--val-fraction", type=float, default=0.2)


def output_root(args: argparse.Namespace) -> Path:
    return Path(args.output_root or os.environ.get(ARTIFACTS_DIR_ENV) or DEFAULT_ARTIFACTS_DIR)


def parse_stages(text: str | None) -> list[StageConfig]:
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


def train_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_folder_arguments(parser)
    parser.add_argument("--arch", required=True)
    parser.add_argument("--input-size", type=int)
    parser.add_argument("--weights", default="none", help="none | imagenet | auto | <file or folder>")
    parser.add_argument("--epochs", type=int, default=10, help="from-scratch epochs, or head epochs when pretrained")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    parser.add_argument("--fine-tune", help="stages after the head: 'vgg19' or 'partial:5:1e-4:sgd,full:5:1e-4:sgd'")
    parser.add_argument("--max-train-images", type=int)
    parser.add_argument("--max-val-images", type=int)
    parser.add_argument("--class-weighting", choices=["balanced", "none"], default="balanced")
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument(
        "--augmentation",
        choices=AUGMENTATION_POLICIES,
        default="geometric",
        help="geometric: zoom, rotation, flip, shift, shear; acquisition: also gamma, contrast, exposure, blur, "
        "noise; robust: also a resize through another resampler and JPEG re-encoding",
    )
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--name")
    parser.add_argument("--split-seed", type=int, help="the patient split's seed if not --seed (ensemble members)")
    parser.add_argument("--init-weights", help="start from this .weights.h5 of the same architecture and size")
    parser.add_argument("--soft-labels", help="distil: 'relpath<TAB>probability' teacher scores for the training films")
    parser.add_argument("--distill-alpha", type=float, default=0.5, help="weight of the teacher in the target")
    parser.add_argument(
        "--pool-margin",
        type=int,
        default=0,
        help="leave this many cells of the last feature map's outer frame out of the pooling (and the heatmap)",
    )
    parser.add_argument("--max-fit-minutes", type=float, help="stop fitting after this long, keeping the best weights")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "float32", "mixed_float16", "mixed_bfloat16"],
        help="auto: mixed_float16 on a GPU, float32 on a CPU; the exported model is float32 either way",
    )
    parser.add_argument(
        "--resume-dir",
        help="keep the run's progress here (every epoch); the same command run again goes on where it stopped",
    )


def train_command(args: argparse.Namespace) -> int:
    if args.arch not in ARCHITECTURES:
        raise SystemExit(f"Unknown architecture '{args.arch}'; choose from {', '.join(sorted(ARCHITECTURES))}")
    stages = parse_stages(args.fine_tune)
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
    data_dir = require_data_dir(args.data_dir)
    weights_dir = resolve_dir(args.weights_dir, WEIGHTS_DIR_ENV, required=False, what="Weights directory")
    root = output_root(args)
    try:
        artifact = train(
            config,
            data_dir=data_dir,
            output_root=root,
            weights_dir=weights_dir,
            cache_dir=Path(args.cache_dir) if args.cache_dir else root / "cache",
            resume_dir=Path(args.resume_dir) if args.resume_dir else None,
        )
    except (WeightsNotFoundError, ResumeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    manifest = artifacts.read_manifest(artifact)
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
