"""Webhook notifications to API clients, retried with exponential backoff."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.db import DatabaseError, InterfaceError

from diagnostics.services.webhooks import WebhookNotDelivered

# Backoff 30 s, 1, 2, 4, … min, capped at 1 h, with jitter: about 4 h over 9 attempts.
WEBHOOK_MAX_RETRIES = 8


@shared_task(
    bind=True,
    name="worker.tasks.deliver_study_webhook",
    acks_late=True,
    autoretry_for=(WebhookNotDelivered, DatabaseError, InterfaceError),
    retry_backoff=30,
    retry_backoff_max=3600,
    retry_jitter=True,
    max_retries=WEBHOOK_MAX_RETRIES,
    soft_time_limit=60,
    time_limit=90,
)
def deliver_study_webhook(self: Any, study_id: int, status: str) -> None:
    from diagnostics.services.webhooks import webhook_notify_study_finished

    webhook_notify_study_finished(study_id=study_id, status=status, final=self.request.retries >= self.max_retries)
