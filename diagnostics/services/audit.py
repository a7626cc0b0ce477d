from __future__ import annotations

import hashlib
import json
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


def audit_read(
    *,
    action: str,
    actor: User | AnonymousUser | None,
    target: models.Model | None = None,
    team_id: int | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Record a read of patient data (a page, a film, a list, an API read).

    The same user reading the same thing with the same detail again within AUDIT_READ_WINDOW_SECONDS
    (a page polling while the AI works, a film's preview re-windowed) is recorded once: who saw what,
    and when first, without one row per poll. If the cache cannot answer, the read is recorded.
    """
    from django.conf import settings
    from django.core.cache import cache

    key_detail = json.dumps(detail or {}, sort_keys=True, default=str)
    key = (
        "audit-read:"
        + hashlib.sha256(
            f"{getattr(actor, 'pk', None)}|{action}|{target._meta.label if target is not None else ''}|"
            f"{target.pk if target is not None else ''}|{key_detail}".encode()
        ).hexdigest()
    )
    try:
        first = cache.add(key, 1, timeout=settings.AUDIT_READ_WINDOW_SECONDS)
    except Exception:  # noqa: BLE001 - a broken cache must not hide a read
        first = True
    if first:
        audit_record(action=action, actor=actor, target=target, team_id=team_id, detail=detail)
