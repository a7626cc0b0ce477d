"""Where a prediction's heatmap stands, read from the prediction, its model and its audit events.

The inference service stores a heatmap with the prediction, in the same transaction
(diagnostics/services/heatmaps.py), so a heatmap is never on its way: it is there, or the page
says why not. The pages, the PDF and the PACS results read here.
"""

from __future__ import annotations

from dataclasses import dataclass

from diagnostics.models import AuditEvent, ModelVersion, Prediction

NO_HEATMAP_ARCHITECTURE = "This model's architecture gives no heatmap."
NO_HEATMAP_STORED = "No heatmap was stored with this assessment."

STORED = "prediction.heatmap_stored"
UNAVAILABLE = "prediction.heatmap_unavailable"


@dataclass(frozen=True)
class HeatmapState:
    status: str  # "ready" | "unavailable"
    message: str = ""
    blank: bool = False  # ready, but no region of the film pointed the model towards pneumonia

    @property
    def ready(self) -> bool:
        return self.status == "ready"


def model_version_has_heatmap(model_version: ModelVersion) -> bool:
    """Whether the model's ONNX graph has a class activation map output (its manifest says, ml/training/export.py)."""
    return bool((model_version.manifest or {}).get("heatmap"))


def prediction_heatmap_state(*, prediction: Prediction) -> HeatmapState:
    """Where the heatmap of an (access-checked) prediction stands, for the page."""
    events = AuditEvent.objects.filter(
        object_type=Prediction._meta.label, object_id=str(prediction.pk), action__in=(STORED, UNAVAILABLE)
    )
    if prediction.heatmap:
        stored = events.filter(action=STORED).first()
        return HeatmapState("ready", blank=bool(stored and stored.detail.get("blank")))
    if not model_version_has_heatmap(prediction.model_version):
        return HeatmapState("unavailable", NO_HEATMAP_ARCHITECTURE)
    unavailable = events.filter(action=UNAVAILABLE).first()
    if unavailable is not None:
        return HeatmapState("unavailable", str(unavailable.detail.get("reason", "")))
    return HeatmapState("unavailable", NO_HEATMAP_STORED)
