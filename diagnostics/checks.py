"""Deployment checks that `manage.py check` runs: settings that would silently lose work."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register


@register()
def visibility_timeout_outlasts_tasks(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Redis redelivers an unacknowledged task after visibility_timeout: it must exceed the longest task."""
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", 3600)
    longest = settings.TRAINING_SOFT_TIME_LIMIT_SECONDS + 300  # the training task's hard limit
    if visibility <= longest:
        return [
            Error(
                f"CELERY_VISIBILITY_TIMEOUT ({visibility}s) must be longer than the training hard limit ({longest}s), "
                "or Redis will hand a running training task to a second worker.",
                id="diagnostics.E001",
            )
        ]
    return []
