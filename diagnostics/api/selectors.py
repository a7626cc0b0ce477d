"""Reads the API needs beyond diagnostics.selectors, with the same access rules.

Clinical reads are limited to the user's care team and never include shadow
predictions; token and delivery reads are for the views that already checked
the caller (admins, or a study from an access-checked selector).
"""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from django.db.models import QuerySet
from django.http import Http404

from diagnostics.models import ApiToken, Feedback, Prediction, Study, User, WebhookDelivery


def prediction_list_for_user(*, user: User | AnonymousUser) -> QuerySet[Prediction]:
    """The team's predictions shown to clinicians (never shadow ones), newest first."""
    if not user.is_authenticated or user.team_id is None:
        return Prediction.objects.none()
    return Prediction.objects.filter(
        role=Prediction.Role.PRIMARY, image__study__patient__team_id=user.team_id
    ).select_related("image__study", "model_version")


def feedback_list_for_prediction(*, prediction: Prediction) -> QuerySet[Feedback]:
    """Feedback on an access-checked prediction, newest (the current verdict) first."""
    return prediction.feedback.select_related("clinician").order_by("-created_at", "-pk")


def webhook_delivery_list_for_study(*, study: Study) -> QuerySet[WebhookDelivery]:
    """Notifications for an access-checked study, newest first."""
    return study.webhook_deliveries.order_by("-created_at", "-pk")


def api_token_list() -> QuerySet[ApiToken]:
    return ApiToken.objects.select_related("user", "team", "created_by")


def api_token_get(*, token_id: int) -> ApiToken:
    try:
        return api_token_list().get(pk=token_id)
    except (ApiToken.DoesNotExist, ValueError, TypeError):
        raise Http404("No such API token.") from None
