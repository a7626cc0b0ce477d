"""Deliveries of an access-checked study, newest first (the API lists them)."""

from __future__ import annotations

from django.db.models import QuerySet

from diagnostics.models import (
    Study,
    WebhookDelivery,
)


def webhook_delivery_list_for_study(*, study: Study) -> QuerySet[WebhookDelivery]:
    """Notifications for an access-checked study, newest first."""
    return study.webhook_deliveries.order_by("-created_at", "-pk")
