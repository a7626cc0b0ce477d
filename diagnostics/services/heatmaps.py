"""Heatmaps for the predictions clinicians see, drawn with the prediction from the model's class activation map.

A model whose head is global average pooling into its final Dense layer returns, with each probability and
from the same ONNX Runtime call, the logit of that probability at every location of its last feature map
(ml/training/export.py). The inference service (services/inference.py) stores each primary prediction and, in the
same transaction, its heatmap: the positive part of that map (the regions that point towards pneumonia),
normalised, coloured and stretched over the film (ml/serving/heatmap.py). No separate worker and no TensorFlow: it
is the same in the embedded mode (tasks in process) and in the inference worker. A model whose
architecture has no such map gets no heatmap and the page says so; a map that does not add up to the
probability shown is recorded as unavailable with the reason. Never a made-up picture.
"""

from __future__ import annotations

import logging

import numpy as np
from django.core.files.base import ContentFile

from diagnostics.models import Prediction
from diagnostics.selectors.heatmaps import STORED, UNAVAILABLE, HeatmapState
from ml.serving.artifacts import heatmap_extent
from ml.serving.heatmap import cam_matches_probability, heatmap_png, positive_evidence

from .audit import audit_record
from .stored_files import file_remove_on_rollback

logger = logging.getLogger(__name__)

# The map has 14x14 cells at most: 256 px is far finer than what it holds, and the page, the PDF and the PACS
# captures stretch it smoothly over the film. Drawn for every film in the inference step: 4 ms at 256 px,
# 19 ms at 512.
HEATMAP_MAX_SIDE = 256
CAM_MISMATCH = (
    "No heatmap is available: the model's map of this film does not add up to the probability shown, "
    "so it would explain another result."
)


def prediction_store_heatmap(*, prediction: Prediction, cam: np.ndarray, team_id: int) -> HeatmapState:
    """Draw and store the heatmap of a primary, scored prediction from its class activation map
    ((h, w) logits, ml.serving.inference.BatchPrediction.cams). Idempotent: a stored heatmap is kept."""
    if prediction.heatmap:
        return HeatmapState("ready")
    if prediction.role != Prediction.Role.PRIMARY or prediction.probability is None:
        raise ValueError(f"Prediction {prediction.pk} is not a scored assessment shown to clinicians.")
    if not cam_matches_probability(cam, prediction.probability):
        return _record_unavailable(prediction=prediction, team_id=team_id, reason=CAM_MISMATCH)
    evidence = positive_evidence(cam)
    width, height = heatmap_size(width=prediction.image.width, height=prediction.image.height)
    # A model with a pooling margin maps only the film inside it (ml/training/export.py): drawn there, clear outside.
    extent = heatmap_extent(prediction.model_version.manifest)
    png = heatmap_png(evidence.map, width=width, height=height, extent=extent)
    return _store_heatmap(prediction=prediction, png=png, raw_max=evidence.raw_max, team_id=team_id)


def heatmap_size(*, width: int, height: int) -> tuple[int, int]:
    """The film's aspect ratio, longest side HEATMAP_MAX_SIDE: the overlay is stretched over the film."""
    scale = HEATMAP_MAX_SIDE / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _store_heatmap(*, prediction: Prediction, png: bytes, raw_max: float, team_id: int) -> HeatmapState:
    field = prediction.heatmap
    name = field.storage.save(field.field.generate_filename(prediction, "heatmap.png"), ContentFile(png))
    file_remove_on_rollback(storage=field.storage, name=name)  # the prediction's transaction may still roll back
    # Conditional: if a second task stored one meanwhile, keep theirs and drop this file.
    if not Prediction.objects.filter(pk=prediction.pk, heatmap="").update(heatmap=name):
        field.storage.delete(name)
        return HeatmapState("ready")
    prediction.heatmap.name = name
    blank = raw_max <= 0.0
    audit_record(
        action=STORED,
        target=prediction,
        team_id=team_id,
        detail={"model_version": prediction.model_version.name, "blank": blank, "raw_max": raw_max},
    )
    return HeatmapState("ready", blank=blank)


def _record_unavailable(*, prediction: Prediction, team_id: int, reason: str) -> HeatmapState:
    audit_record(
        action=UNAVAILABLE,
        target=prediction,
        team_id=team_id,
        detail={"model_version": prediction.model_version.name, "reason": reason},
    )
    logger.info("No heatmap for prediction %s: %s", prediction.pk, reason)
    return HeatmapState("unavailable", reason)
