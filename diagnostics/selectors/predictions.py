"""Assessments shown to clinicians (never a shadow model's) and the readings of them."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from django.db.models import QuerySet
from django.http import Http404

from diagnostics.models import (
    Acknowledgement,
    Feedback,
    Prediction,
    User,
)


def prediction_get_for_user(*, user: User | AnonymousUser, prediction_id: int) -> Prediction:
    """A prediction shown to clinicians (never a shadow one) of the user's team."""
    if not user.is_authenticated or user.team_id is None:
        raise Http404("No such prediction.")
    try:
        return Prediction.objects.select_related("image__study__patient", "model_version").get(
            pk=prediction_id, role=Prediction.Role.PRIMARY, image__study__patient__team_id=user.team_id
        )
    except (Prediction.DoesNotExist, ValueError, TypeError):
        raise Http404("No such prediction.") from None


def prediction_list_for_user(*, user: User | AnonymousUser) -> QuerySet[Prediction]:
    """The team's predictions shown to clinicians (never shadow ones), newest first."""
    if not user.is_authenticated or user.team_id is None:
        return Prediction.objects.none()
    return Prediction.objects.filter(
        role=Prediction.Role.PRIMARY, image__study__patient__team_id=user.team_id
    ).select_related("image__study", "model_version")


def acknowledgement_list_for_prediction(*, prediction: Prediction) -> QuerySet[Acknowledgement]:
    """'Seen: no AI result' on a prediction from prediction_get_for_user, newest first."""
    return prediction.acknowledgements.select_related("clinician").order_by("-created_at", "-pk")


def feedback_list_for_prediction(*, prediction: Prediction) -> QuerySet[Feedback]:
    """Feedback on an access-checked prediction, newest (the current verdict) first."""
    return prediction.feedback.select_related("clinician").order_by("-created_at", "-pk")
