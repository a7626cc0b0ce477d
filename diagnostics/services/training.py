"""Retraining: admins (or the schedule) start a run; a training worker executes it.

The web process only validates and enqueues; TensorFlow is imported by the
training worker alone, inside `training_run_execute`.
"""

from __future__ import annotations

import datetime
import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from diagnostics.models import Feedback, Prediction, TrainingRun, User
from ml.training.config import ARCHITECTURE_NAMES

from .audit import audit_record

logger = logging.getLogger(__name__)

DATA_SOURCES = ("dataset", "dataset+feedback")
STAGE_PLANS = ("single", "progressive")
LOG_LIMIT_CHARS = 200_000
PROGRESS_EVERY_SECONDS = 2.0


def training_config_validate(*, architecture: str, config: dict[str, Any]) -> dict[str, Any]:
    """Check an admin's choices and fill in defaults; the result is stored on the run verbatim."""
    if architecture not in ARCHITECTURE_NAMES:
        raise ValidationError({"architecture": f"Unknown architecture; choose one of {', '.join(ARCHITECTURE_NAMES)}."})
    clean = {
        "epochs": _int_in(config, "epochs", 10, 1, 200),
        "input_size": _int_in(config, "input_size", 128, 32, 512),
        "batch_size": _int_in(config, "batch_size", 32, 1, 256),
        "weights": str(config.get("weights", "none")),
        "stages": str(config.get("stages", "single")),
        "data_source": str(config.get("data_source", "dataset")),
        "max_train_images": config.get("max_train_images"),
        "seed": _int_in(config, "seed", 1337, 0, 2**31 - 1),
    }
    if clean["weights"] not in ("none", "imagenet"):
        raise ValidationError({"weights": "Weights must be 'none' (from scratch) or 'imagenet'."})
    if clean["stages"] not in STAGE_PLANS:
        raise ValidationError({"stages": f"Stages must be one of {', '.join(STAGE_PLANS)}."})
    if clean["stages"] == "progressive" and (architecture == "cnn" or clean["weights"] == "none"):
        raise ValidationError({"stages": "Progressive fine-tuning needs a pretrained backbone (weights 'imagenet')."})
    if clean["data_source"] not in DATA_SOURCES:
        raise ValidationError({"data_source": f"Data source must be one of {', '.join(DATA_SOURCES)}."})
    if clean["max_train_images"] is not None:
        clean["max_train_images"] = _int_in(config, "max_train_images", 0, 8, 1_000_000)
    if reasons := training_unavailable_reasons():
        raise ValidationError(reasons)
    return clean


NO_TRAINING_WORKER = (
    "This installation runs without a task queue (no CELERY_BROKER_URL: the embedded default), so no training "
    "worker can take a run, and training inside the web process would hold the portal for hours. Set "
    "CELERY_BROKER_URL to a Redis server and start a training worker (celery -A worker worker -Q training "
    "--concurrency 1); or train from the command line (python -m ml train --data-dir <folder>) and register "
    "the result with manage.py register_model <artifact-dir>."
)
NO_DATASET = (
    "No training dataset is configured: set PNEUMONIA_DATA_DIR to the dataset folder (train/NORMAL and "
    "train/PNEUMONIA inside it) on the web app and the training workers, then restart them."
)


def training_unavailable_reasons() -> list[str]:
    """Why this installation cannot run a training run, in words an admin can act on; empty when it can.
    The admin's form shows them before anything is chosen; training_config_validate refuses with them."""
    reasons = []
    if settings.CELERY_TASK_ALWAYS_EAGER:
        reasons.append(NO_TRAINING_WORKER)
    if not settings.PNEUMONIA_DATA_DIR:
        reasons.append(NO_DATASET)
    return reasons


def _int_in(config: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    try:
        value = int(config.get(key, default))
    except (TypeError, ValueError):
        raise ValidationError({key: f"{key} must be a whole number."}) from None
    if not low <= value <= high:
        raise ValidationError({key: f"{key} must be between {low} and {high}."})
    return value


def training_run_start(
    *, actor: User | None, architecture: str, config: dict[str, Any], trigger: str = "admin"
) -> TrainingRun:
    """Record a training run and queue it for a training worker."""
    from diagnostics.tasks.training import run_training  # the tasks import the services

    clean = training_config_validate(architecture=architecture, config=config)
    with transaction.atomic():
        run = TrainingRun.objects.create(requested_by=actor, trigger=trigger, architecture=architecture, config=clean)
        audit_record(action="training.requested", actor=actor, target=run, detail={"trigger": trigger, "config": clean})
        run_training.delay_on_commit(run.pk)
    return run


def training_run_cancel(*, run: TrainingRun, actor: User | None) -> TrainingRun:
    """Cancel a queued run at once; ask a running one to stop at its next progress report."""
    with transaction.atomic():
        if TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.QUEUED).update(
            status=TrainingRun.Status.CANCELLED, cancel_requested=True, finished_at=timezone.now()
        ):
            audit_record(action="training.cancelled", actor=actor, target=run, detail={"while": "queued"})
        elif TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.RUNNING).update(cancel_requested=True):
            audit_record(action="training.cancel_requested", actor=actor, target=run)
        else:
            raise ValidationError(f"Training run {run.pk} has already finished ({run.status}).")
    run.refresh_from_db()
    return run


class _ProgressRecorder:
    """Receives the trainer's progress events, stores them on the run, and stops a cancelled run."""

    def __init__(self, run: TrainingRun, log_lines: list[str]) -> None:
        self.run = run
        self.log_lines = log_lines
        self.started = time.monotonic()
        self.last_write = 0.0

    def __call__(self, event: dict[str, Any]) -> None:
        from ml.training.training import TrainingCancelled

        now = time.monotonic()
        if event.get("kind") == "batch" and now - self.last_write < PROGRESS_EVERY_SECONDS:
            return
        self.last_write = now
        progress = {**event, "elapsed_seconds": round(now - self.started, 1), "updated_at": timezone.now().isoformat()}
        done, total = event.get("epochs_done"), event.get("epochs_total")
        if done and total:
            progress["eta_seconds"] = round((now - self.started) / done * (total - done), 1)
        TrainingRun.objects.filter(pk=self.run.pk).update(
            progress=progress, log="\n".join(self.log_lines)[-LOG_LIMIT_CHARS:]
        )
        if TrainingRun.objects.filter(pk=self.run.pk, cancel_requested=True).exists():
            raise TrainingCancelled(f"Training run {self.run.pk} was cancelled by an administrator.")


class _ListHandler(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(level=logging.INFO)
        self.lines = lines
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextmanager
def _captured_training_log(lines: list[str]) -> Iterator[None]:
    handler = _ListHandler(lines)
    ml_logger = logging.getLogger("ml")
    previous_level = ml_logger.level
    ml_logger.addHandler(handler)
    ml_logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        ml_logger.removeHandler(handler)
        ml_logger.setLevel(previous_level)


def feedback_training_records(*, destination: Path) -> tuple[list[Any], dict[str, Any]]:
    """Images whose label a clinician confirmed or corrected, written out for the trainer.

    The latest feedback on each primary prediction is the label; these films are
    added to training only, never to validation, so runs stay comparable.
    """
    from ml.serving.artifacts import CLASS_NAMES
    from ml.serving.films import ImageRecord

    latest = Feedback.objects.filter(prediction=OuterRef("pk")).order_by("-created_at", "-pk")
    predictions = (
        Prediction.objects.filter(role=Prediction.Role.PRIMARY, feedback__isnull=False)
        .annotate(confirmed=Subquery(latest.values("confirmed_label")[:1]))
        .select_related("image__study__patient")
        .distinct()
    )
    records, counts, image_ids = [], {name: 0 for name in CLASS_NAMES}, set()
    for prediction in predictions:
        image = prediction.image
        if image.pk in image_ids:
            continue
        image_ids.add(image.pk)
        label = CLASS_NAMES.index(prediction.confirmed)
        path = destination / prediction.confirmed / f"portal-image-{image.pk}.{image.format.lower()}"
        path.parent.mkdir(parents=True, exist_ok=True)
        with image.file.open("rb") as source:
            path.write_bytes(source.read())
        # One portal patient is one group, as the dataset's file-name patients are.
        records.append(ImageRecord(path, label, f"portal-patient-{image.study.patient_id}"))
        counts[prediction.confirmed] += 1
    return records, {"feedback_images": len(records), "feedback_counts": counts, "image_ids": sorted(image_ids)}


def training_run_execute(*, run_id: int) -> TrainingRun | None:
    """Train (in the training worker), register the result as a candidate and evaluate it on the gate set."""
    from ml.training.config import TrainConfig, vgg19_progressive_stages
    from ml.training.training import TrainingCancelled, describe_device, train

    from .model_registry import model_version_evaluate, model_version_register, promotion_gate_get

    claimed = TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.QUEUED).update(
        status=TrainingRun.Status.RUNNING, started_at=timezone.now(), device=describe_device()
    )
    if not claimed:
        logger.info("Training run %s is not queued; nothing to do", run_id)
        return None
    run = TrainingRun.objects.get(pk=run_id)
    audit_record(action="training.started", target=run, detail={"device": run.device})
    config = run.config
    run_dir = Path(settings.MODEL_DIR) / "training-runs" / str(run.pk)
    log_lines: list[str] = []
    try:
        extra: list[Any] = []
        feedback_summary: dict[str, Any] = {"feedback_images": 0}
        if config["data_source"] == "dataset+feedback":
            extra, feedback_summary = feedback_training_records(destination=run_dir / "feedback")
        train_config = TrainConfig(
            architecture=run.architecture,
            input_size=config["input_size"],
            weights=config["weights"],
            epochs=config["epochs"],
            batch_size=config["batch_size"],
            seed=config["seed"],
            max_train_images=config["max_train_images"],
            fine_tune_stages=vgg19_progressive_stages()[1:] if config["stages"] == "progressive" else [],
            name=f"{run.architecture}-{config['input_size']}px-run{run.pk}",
        )
        with _captured_training_log(log_lines):
            artifact_dir = train(
                train_config,
                data_dir=Path(settings.PNEUMONIA_DATA_DIR),
                output_root=Path(settings.MODEL_DIR),
                weights_dir=Path(settings.IMAGENET_WEIGHTS_DIR) if settings.IMAGENET_WEIGHTS_DIR else None,
                extra_train_records=extra,
                progress=_ProgressRecorder(run, log_lines),
            )
        model_version = model_version_register(artifact_dir=artifact_dir, training_run=run)
        run.data_summary = {
            "dataset": settings.PNEUMONIA_DATA_DIR,
            **feedback_summary,
            **model_version.manifest["data"],
        }
        gate = promotion_gate_get()
        if gate.evaluation_data_dir:
            model_version_evaluate(model_version=model_version, evaluation_dir=gate.evaluation_data_dir)
        _finish(run, TrainingRun.Status.SUCCEEDED, log_lines)
    except TrainingCancelled as cancelled:
        _finish(run, TrainingRun.Status.CANCELLED, log_lines, error=str(cancelled))
    except Exception as error:
        logger.exception("Training run %s failed", run.pk)
        _finish(run, TrainingRun.Status.FAILED, log_lines, error=f"{type(error).__name__}: {error}")
    finally:
        shutil.rmtree(run_dir / "feedback", ignore_errors=True)
    return run


def _finish(run: TrainingRun, status: str, log_lines: list[str], error: str = "") -> None:
    run.status = status
    run.error = error
    run.finished_at = timezone.now()
    run.log = "\n".join(log_lines)[-LOG_LIMIT_CHARS:]
    run.save(update_fields=["status", "error", "finished_at", "log", "data_summary"])
    audit_record(action=f"training.{status}", target=run, detail={"error": error} if error else {})


def training_run_reconcile_stale(*, stale_after_seconds: int | None = None) -> int:
    """Fail runs whose worker died: running, with no progress report for too long."""
    limit = stale_after_seconds if stale_after_seconds is not None else settings.TRAINING_STALE_AFTER_SECONDS
    cutoff = timezone.now() - datetime.timedelta(seconds=limit)
    failed = 0
    for run in TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING):
        updated = run.progress.get("updated_at")
        last = datetime.datetime.fromisoformat(updated) if updated else run.started_at
        if last is not None and last < cutoff:
            reason = f"No progress for {limit // 60} minutes: the training worker stopped. Start a new run."
            if TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.RUNNING).update(
                status=TrainingRun.Status.FAILED, error=reason, finished_at=timezone.now()
            ):
                audit_record(action="training.failed", target=run, detail={"error": reason})
                failed += 1
    return failed
