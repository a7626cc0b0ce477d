"""Webhook notifications to API clients, retried with exponential backoff."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.db import DatabaseError, InterfaceError

from diagnostics.integrations.webhooks.services import WebhookNotDelivered
from worker.queues import options


# Options and backoff in worker/queues.py; the exception list names a service's error, so it stays here.
@shared_task(
    bind=True,
    autoretry_for=(WebhookNotDelivered, DatabaseError, InterfaceError),
    **options("worker.tasks.deliver_study_webhook"),
)
def deliver_study_webhook(self: Any, study_id: int, status: str) -> None:
    from diagnostics.integrations.webhooks.services import webhook_notify_study_finished

    webhook_notify_study_finished(study_id=study_id, status=status, final=self.request.retries >= self.max_retries)
