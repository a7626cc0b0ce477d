"""Where a prediction's heatmap stands, read from the prediction and its audit events.

The explain worker writes (diagnostics/services/heatmaps.py); the pages, the PDF and the API read here.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from django.utils import timezone

from diagnostics.models import AuditEvent, ModelVersion, Prediction

NO_KERAS_FILE = "No heatmap is available: this model's artifact has no Keras file to compute one from."

# Past this, the page says the heatmap is late (the explain worker may be down) and keeps waiting.
HEATMAP_SLOW_AFTER = datetime.timedelta(minutes=5)
SLOW_HEATMAP = (
    "The heatmap is taking longer than usual: the explain worker may be busy or stopped. "
    "The AI result above does not depend on it."
)

STORED = "prediction.heatmap_stored"
UNAVAILABLE = "prediction.heatmap_unavailable"


@dataclass(frozen=True)
class HeatmapState:
    status: str  # "ready" | "pending" | "unavailable"
    message: str = ""
    blank: bool = False  # ready, but Grad-CAM found no region that raised the estimate

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    @property
    def pending(self) -> bool:
        return self.status == "pending"


def model_version_has_keras_file(model_version: ModelVersion) -> bool:
    return bool((model_version.manifest.get("files") or {}).get("keras"))


def prediction_heatmap_state(*, prediction: Prediction) -> HeatmapState:
    """Where the heatmap of an (access-checked) prediction stands, for the page."""
    events = AuditEvent.objects.filter(
        object_type=Prediction._meta.label, object_id=str(prediction.pk), action__in=(STORED, UNAVAILABLE)
    )
    if prediction.heatmap:
        stored = events.filter(action=STORED).first()
        return HeatmapState("ready", blank=bool(stored and stored.detail.get("blank")))
    if not model_version_has_keras_file(prediction.model_version):
        return HeatmapState("unavailable", NO_KERAS_FILE)
    unavailable = events.filter(action=UNAVAILABLE).first()
    if unavailable is not None:
        return HeatmapState("unavailable", str(unavailable.detail.get("reason", "")))
    if timezone.now() - prediction.created_at > HEATMAP_SLOW_AFTER:
        return HeatmapState("pending", SLOW_HEATMAP)
    return HeatmapState("pending")
