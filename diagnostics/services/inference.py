"""Running the active model on a study's images and storing the predictions.

Called by the Celery inference task (or in process in the embedded default).
The ONNX model is loaded once per process and reloaded only when the active
model version changes, so a promotion takes effect without restarting workers.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from diagnostics.models import Image, ModelVersion, Prediction, Study
from ml.inference import ModelArtifactError, Predictor
from ml.preprocessing import ImageDecodeError, load_for_model

from .audit import audit_record
from .studies import study_set_status

logger = logging.getLogger(__name__)

NO_ACTIVE_MODEL = "No active AI model is registered. An administrator must register and activate one."


class InferenceFailure(Exception):
    """A failure that retrying cannot fix; the study is failed with this message."""


_predictor_lock = threading.Lock()
_predictor: tuple[int, Predictor] | None = None


def predictor_for(model_version: ModelVersion) -> Predictor:
    """The process-wide predictor for `model_version`, loading it on first use or on a change."""
    global _predictor
    with _predictor_lock:
        if _predictor is None or _predictor[0] != model_version.pk:
            threads = settings.INFERENCE_THREADS or None
            predictor = Predictor.from_artifact(model_version.artifact_path, intra_op_threads=threads)
            if predictor.model_sha256 != model_version.sha256:
                raise ModelArtifactError(
                    f"The model file for {model_version.name} changed on disk since it was registered."
                )
            _predictor = (model_version.pk, predictor)
            logger.info("Loaded model %s from %s", model_version.name, model_version.artifact_path)
        return _predictor[1]


def preload_active_model() -> None:
    """Load the active model before the first task arrives (worker start-up)."""
    active = ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).first()
    if active is not None:
        try:
            predictor_for(active)
        except ModelArtifactError:
            logger.exception("Could not preload the active model %s", active.name)


def study_claim_for_inference(*, study_id: int) -> Study | None:
    """Move a queued study to running, counting the attempt. None if someone else has it."""
    claimed = Study.objects.filter(pk=study_id, status=Study.Status.QUEUED).update(
        status=Study.Status.RUNNING, attempts=F("attempts") + 1, status_changed_at=timezone.now()
    )
    if not claimed:
        return None
    study = Study.objects.select_related("patient").get(pk=study_id)
    audit_record(
        action="study.status_changed",
        target=study,
        team_id=study.patient.team_id,
        detail={"from": Study.Status.QUEUED, "to": Study.Status.RUNNING, "attempt": study.attempts},
    )
    return study


def study_run_inference(*, study_id: int) -> None:
    """Predict every image of a queued study with the active model and finish the study.

    Idempotent: a study that is not queued is left alone, and an image already
    predicted by the active model is not predicted again.
    """
    study = study_claim_for_inference(study_id=study_id)
    if study is None:
        logger.info("Study %s is not queued; nothing to do", study_id)
        return
    try:
        model_version = ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).first()
        if model_version is None:
            raise InferenceFailure(NO_ACTIVE_MODEL)
        try:
            predictor = predictor_for(model_version)
        except ModelArtifactError as error:
            raise InferenceFailure(f"The active model {model_version.name} cannot be loaded: {error}") from None
        for image in study.images.exclude(predictions__model_version=model_version):
            image_predict(image=image, model_version=model_version, predictor=predictor)
    except InferenceFailure as failure:
        study_set_status(study=study, status=Study.Status.FAILED, reason=str(failure))
        return
    except Exception:
        # Possibly transient (database, storage): give the study back to the queue so a
        # retry or the reconciler can claim it again, then let the task decide.
        study_set_status(
            study=study, status=Study.Status.QUEUED, reason="Interrupted; will retry.", expected=[Study.Status.RUNNING]
        )
        raise
    study_set_status(study=study, status=Study.Status.DONE)


def image_predict(*, image: Image, model_version: ModelVersion, predictor: Predictor) -> Prediction:
    """Run one stored image through the model and store the prediction (once per model)."""
    with image.file.open("rb") as handle:
        data = handle.read()
    started = time.perf_counter()
    try:
        tensor = load_for_model(data, input_size=predictor.input_size)
    except ImageDecodeError as error:
        raise InferenceFailure(f"Image {image.pk} could not be read: {error}") from None
    probability = float(predictor.predict_batch(tensor[None, ...])[0])
    latency_ms = (time.perf_counter() - started) * 1000.0
    prediction, _ = Prediction.objects.get_or_create(
        image=image,
        model_version=model_version,
        defaults={
            "probability": probability,
            "threshold": predictor.threshold,
            "label": predictor.label_for(probability),
            "latency_ms": latency_ms,
            "model_sha256": predictor.model_sha256,
            "preprocessing_version": predictor.preprocessing_version,
            "input_sha256": hashlib.sha256(data).hexdigest(),
        },
    )
    return prediction
