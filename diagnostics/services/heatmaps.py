"""Grad-CAM heatmaps for the predictions clinicians see, computed by the explain worker.

When a study finishes, a receiver sends each of its primary predictions without a heatmap to
the `explain` queue. The explain worker (and only it) imports TensorFlow, lazily, and loads the
Keras model of the prediction's artifact once per process. A heatmap that cannot be computed
(no Keras file in the artifact, a Keras model that disagrees with the served prediction, no
explain worker in this installation) is recorded as unavailable with its reason: the page says
so, and never shows a made-up picture.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import DatabaseError

from diagnostics.models import ModelVersion, Prediction
from diagnostics.selectors.heatmaps import (
    NO_KERAS_FILE,
    STORED,
    UNAVAILABLE,
    HeatmapState,
    model_version_has_keras_file,
)
from ml.preprocessing import ImageDecodeError

from .audit import audit_record

if TYPE_CHECKING:
    from ml.explain import GradCamExplainer

logger = logging.getLogger(__name__)

HEATMAP_MAX_SIDE = 512
# The Keras model must reproduce the served (ONNX) probability, or its heatmap explains another model.
KERAS_ONNX_TOLERANCE = 1e-3
NOT_ANALYSABLE = "No heatmap: the AI did not assess this film (not analysable)."
NO_EXPLAIN_WORKER = (
    "No heatmap is available: this installation runs without a task queue, and heatmaps are computed "
    "by a separate explain worker."
)

def heatmap_enqueue_for_study(*, study_id: int) -> list[int]:
    """Send the study's primary predictions that lack a heatmap to the explain queue."""
    predictions = list(
        Prediction.objects.filter(
            image__study_id=study_id, role=Prediction.Role.PRIMARY, outcome=Prediction.Outcome.SCORED, heatmap=""
        )
        .select_related("model_version", "image__study__patient")
        .order_by("pk")
    )
    if settings.CELERY_TASK_ALWAYS_EAGER:
        # In-process tasks would load TensorFlow into the web process, which serves on ONNX only.
        for prediction in predictions:
            _record_unavailable(prediction=prediction, reason=NO_EXPLAIN_WORKER)
        return []
    from worker.tasks.explain import compute_prediction_heatmap  # the worker package imports services

    for prediction in predictions:
        compute_prediction_heatmap.delay(prediction.pk)
    return [prediction.pk for prediction in predictions]


_explainer_lock = threading.Lock()
_explainer: tuple[int, GradCamExplainer] | None = None


def explainer_for(model_version: ModelVersion) -> GradCamExplainer:
    """The process-wide Grad-CAM explainer for `model_version`, loaded on first use or on a change."""
    global _explainer
    from ml.explain import GradCamExplainer  # TensorFlow: the explain worker only

    with _explainer_lock:
        if _explainer is None or _explainer[0] != model_version.pk:
            _explainer = (model_version.pk, GradCamExplainer.from_artifact(model_version.artifact_path))
            logger.info("Loaded the Keras model of %s for Grad-CAM", model_version.name)
        return _explainer[1]


def prediction_compute_heatmap(*, prediction_id: int) -> HeatmapState:
    """Compute and store the Grad-CAM heatmap of one primary prediction (idempotent)."""
    from ml.explain import ExplainerUnavailable, heatmap_png

    prediction = Prediction.objects.select_related("image__study__patient", "model_version").get(pk=prediction_id)
    if prediction.heatmap:
        return HeatmapState("ready")
    if prediction.role != Prediction.Role.PRIMARY:
        raise ValueError(f"Prediction {prediction_id} is a shadow prediction; clinicians never see it.")
    if prediction.probability is None:
        return _record_unavailable(prediction=prediction, reason=NOT_ANALYSABLE)
    if not model_version_has_keras_file(prediction.model_version):
        return _record_unavailable(prediction=prediction, reason=NO_KERAS_FILE)
    try:
        explainer = explainer_for(prediction.model_version)
        with prediction.image.file.open("rb") as handle:
            result = explainer.explain_bytes(handle.read())
    except (ExplainerUnavailable, ImageDecodeError) as error:
        return _record_unavailable(prediction=prediction, reason=f"No heatmap is available: {error}")
    except DatabaseError:
        raise  # the task retries these
    except Exception as error:  # Keras and TensorFlow raise many types; the same input would fail again
        logger.exception("Grad-CAM failed for prediction %s", prediction.pk)
        return _record_unavailable(
            prediction=prediction,
            reason=f"No heatmap is available: it could not be computed for this film ({type(error).__name__}).",
        )
    if abs(result.probability - prediction.probability) > KERAS_ONNX_TOLERANCE:
        return _record_unavailable(
            prediction=prediction,
            reason=(
                "No heatmap is available: the model's Keras file gives a different probability "
                f"({result.probability:.4f}) from the one shown ({prediction.probability:.4f})."
            ),
        )
    width, height = heatmap_size(width=prediction.image.width, height=prediction.image.height)
    png = heatmap_png(result.cam, width=width, height=height)
    return _store_heatmap(prediction=prediction, png=png, raw_max=result.raw_max)


def heatmap_size(*, width: int, height: int) -> tuple[int, int]:
    """The film's aspect ratio, longest side HEATMAP_MAX_SIDE: the overlay is stretched over the film."""
    scale = HEATMAP_MAX_SIDE / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _store_heatmap(*, prediction: Prediction, png: bytes, raw_max: float) -> HeatmapState:
    field = prediction.heatmap
    name = field.storage.save(field.field.generate_filename(prediction, "heatmap.png"), ContentFile(png))
    # Conditional: if a second task stored one meanwhile, keep theirs and drop this file.
    if not Prediction.objects.filter(pk=prediction.pk, heatmap="").update(heatmap=name):
        field.storage.delete(name)
        return HeatmapState("ready")
    prediction.heatmap.name = name
    blank = raw_max <= 0.0
    audit_record(
        action=STORED,
        target=prediction,
        team_id=prediction.image.study.patient.team_id,
        detail={"model_version": prediction.model_version.name, "blank": blank, "raw_max": raw_max},
    )
    return HeatmapState("ready", blank=blank)


def _record_unavailable(*, prediction: Prediction, reason: str) -> HeatmapState:
    audit_record(
        action=UNAVAILABLE,
        target=prediction,
        team_id=prediction.image.study.patient.team_id,
        detail={"model_version": prediction.model_version.name, "reason": reason},
    )
    logger.info("No heatmap for prediction %s: %s", prediction.pk, reason)
    return HeatmapState("unavailable", reason)
