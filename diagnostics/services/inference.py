"""Running the active model (and a shadow challenger) on a study's images.

Called by the Celery inference task (or in process in the embedded default).
ONNX models are loaded once per process and kept while they serve, so a
promotion takes effect on the next task without restarting workers.
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


_predictors_lock = threading.Lock()
# At most the active and the shadow model stay loaded; older ones are dropped on a change.
_predictors: dict[int, Predictor] = {}


def predictor_for(model_version: ModelVersion) -> Predictor:
    """The process-wide predictor for `model_version`, loaded on first use."""
    with _predictors_lock:
        predictor = _predictors.get(model_version.pk)
        if predictor is None:
            threads = settings.INFERENCE_THREADS or None
            predictor = Predictor.from_artifact(model_version.artifact_path, intra_op_threads=threads)
            if predictor.model_sha256 != model_version.sha256:
                raise ModelArtifactError(
                    f"The model file for {model_version.name} changed on disk since it was registered."
                )
            serving = set(
                ModelVersion.objects.filter(
                    status__in=[ModelVersion.Status.ACTIVE, ModelVersion.Status.SHADOW]
                ).values_list("pk", flat=True)
            )
            for stale in [pk for pk in _predictors if pk not in serving]:
                del _predictors[stale]
            _predictors[model_version.pk] = predictor
            logger.info("Loaded model %s from %s", model_version.name, model_version.artifact_path)
        return predictor


def preload_serving_models() -> None:
    """Load the active and shadow models before the first task arrives (worker start-up)."""
    for model_version in ModelVersion.objects.filter(
        status__in=[ModelVersion.Status.ACTIVE, ModelVersion.Status.SHADOW]
    ):
        try:
            predictor_for(model_version)
        except ModelArtifactError:
            logger.exception("Could not preload model %s", model_version.name)


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
    predicted by a model is not predicted again by it. A shadow model, if any,
    predicts too; its results are stored for comparison and never shown.
    """
    study = study_claim_for_inference(study_id=study_id)
    if study is None:
        logger.info("Study %s is not queued; nothing to do", study_id)
        return
    try:
        _inject_fault_delay()
        active = ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).first()
        if active is None:
            raise InferenceFailure(NO_ACTIVE_MODEL)
        try:
            predictor = predictor_for(active)
        except ModelArtifactError as error:
            raise InferenceFailure(f"The active model {active.name} cannot be loaded: {error}") from None
        for image in study.images.exclude(predictions__model_version=active):
            image_predict(image=image, model_version=active, predictor=predictor, role=Prediction.Role.PRIMARY)
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
    study_run_shadow(study=study)
    study_set_status(study=study, status=Study.Status.DONE)


def study_run_shadow(*, study: Study) -> None:
    """Let the shadow model predict the study too. Its failure never affects the clinician's result."""
    shadow = ModelVersion.objects.filter(status=ModelVersion.Status.SHADOW).first()
    if shadow is None:
        return
    try:
        predictor = predictor_for(shadow)
        for image in study.images.exclude(predictions__model_version=shadow):
            image_predict(image=image, model_version=shadow, predictor=predictor, role=Prediction.Role.SHADOW)
    except (ModelArtifactError, InferenceFailure) as error:
        logger.warning("Shadow model %s failed on study %s: %s", shadow.name, study.pk, error)
        audit_record(
            action="model.shadow_failed", target=shadow, detail={"study": study.pk, "error": str(error)[:500]}
        )


def image_predict(
    *, image: Image, model_version: ModelVersion, predictor: Predictor, role: str = Prediction.Role.PRIMARY
) -> Prediction:
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
            "role": role,
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


def _inject_fault_delay() -> None:
    # Fault testing only (default 0): holds a claimed study in `running` so a chaos
    # test can kill the worker mid-task. See tests/test_reliability.py.
    if settings.INFERENCE_FAULT_DELAY_SECONDS:
        time.sleep(settings.INFERENCE_FAULT_DELAY_SECONDS)
