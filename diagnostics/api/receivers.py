"""Reactions of the API to domain events: a finished study notifies its callback_url."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from diagnostics.events import study_finished
from diagnostics.models import Study


@receiver(study_finished, dispatch_uid="api.webhook_on_study_finished")
def _enqueue_webhook(sender: Any, study_id: int, status: str, **kwargs: Any) -> None:
    # Sent after commit; only studies created with a callback_url are notified, by a worker.
    if Study.objects.filter(pk=study_id).exclude(callback_url="").exists():
        from worker.tasks.webhooks import deliver_study_webhook  # the worker package imports services

        deliver_study_webhook.delay(study_id, status)
