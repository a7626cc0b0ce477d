"""The model registry: the active model, the versions, and how a shadow model compares."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404

from diagnostics.models import (
    ModelVersion,
    Prediction,
)


def model_version_active() -> ModelVersion | None:
    return ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).first()


def model_version_list() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.all()


def model_version_get(*, model_version_id: int) -> ModelVersion:
    try:
        return ModelVersion.objects.get(pk=model_version_id)
    except (ModelVersion.DoesNotExist, ValueError, TypeError):
        raise Http404("No such model version.") from None


def shadow_comparison(*, shadow: ModelVersion, active: ModelVersion) -> dict[str, float | int | None]:
    """How a shadow model's predictions compare with the active model's on the same images."""
    # Films both models scored: a film the gate refused has no probability to compare.
    pairs = list(
        Prediction.objects.filter(
            model_version=shadow,
            outcome=Prediction.Outcome.SCORED,
            image__predictions__model_version=active,
            image__predictions__outcome=Prediction.Outcome.SCORED,
        ).values_list("probability", "label", "image__predictions__probability", "image__predictions__label")
    )
    if not pairs:
        return {
            "images": 0,
            "label_agreement": None,
            "mean_abs_probability_difference": None,
            "shadow_positive_rate": None,
            "active_positive_rate": None,
        }
    return {
        "images": len(pairs),
        "label_agreement": sum(1 for _, s_label, _, a_label in pairs if s_label == a_label) / len(pairs),
        "mean_abs_probability_difference": sum(abs(s - a) for s, _, a, _ in pairs if s is not None and a is not None)
        / len(pairs),
        "shadow_positive_rate": sum(1 for _, s_label, _, _ in pairs if s_label == "PNEUMONIA") / len(pairs),
        "active_positive_rate": sum(1 for _, _, _, a_label in pairs if a_label == "PNEUMONIA") / len(pairs),
    }
