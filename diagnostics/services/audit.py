from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.db import models

from diagnostics.models import AuditEvent, User


def audit_record(
    *,
    action: str,
    actor: User | AnonymousUser | None = None,
    target: models.Model | None = None,
    team_id: int | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the audit log. `actor` is None for the system (workers, reconciler)."""
    return AuditEvent.objects.create(
        action=action,
        actor=actor if isinstance(actor, User) else None,
        object_type=target._meta.label if target is not None else "",
        object_id=str(target.pk) if target is not None else "",
        team_id=team_id,
        detail=detail or {},
    )
