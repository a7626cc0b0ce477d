"""Deliveries of an access-checked study, newest first (the API lists them)."""

from __future__ import annotations

from django.db.models import QuerySet

from diagnostics.models import (
    PacsDelivery,
    Study,
)


def pacs_delivery_list_for_study(*, study: Study) -> QuerySet[PacsDelivery]:
    """Results sent back to the PACS of an access-checked study, newest first."""
    return study.pacs_deliveries.select_related("peer").order_by("-created_at", "-pk")
