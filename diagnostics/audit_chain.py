"""The audit log's hash chain: every event stores the hash of its content and of the event before it.

One place computes a row's hash (`row_digest`), appends a row to the chain (`chain_append`, called by
`AuditEvent.save`) and walks the chain (`chain_verify`, run by `manage.py audit_verify`). A row edited,
inserted or deleted behind the application's back (a database superuser, a restored dump) no longer
fits: its own hash, or the link the next row holds, disagrees.

Appends are serialised so that two writers never take the same predecessor: on PostgreSQL a
transaction-scoped advisory lock is held from reading the chain's head until the transaction commits
(rows also get their ids inside the lock, so id order is chain order); `prev_hash` is unique, so a
writer that skipped the lock fails instead of forking the chain. The embedded SQLite default is one
process: a thread lock serialises it. `created_at` is the database's clock, read inside the lock;
on PostgreSQL a trigger refuses any other value (docs/operations.md, "Audit log").
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import connections, transaction
from django.utils import timezone

if TYPE_CHECKING:
    from diagnostics.models import AuditEvent

GENESIS = "0" * 64  # the predecessor of the first event
# pg_advisory_xact_lock key of the chain's head ("AUDT"); advisory locks are per database.
ADVISORY_LOCK_KEY = 0x41554454
_thread_lock = threading.Lock()


def canonical(value: Any) -> Any:
    """A JSON value as it reads back from any backend: keys sorted on dumping, and an integral float
    written as the integer (PostgreSQL's jsonb gives 1e16 back as 10000000000000000)."""
    if isinstance(value, dict):
        return {str(key): canonical(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def detail_as_stored(detail: dict[str, Any] | None) -> dict[str, Any]:
    """The detail as the JSON column will hold it (what the hash covers): a JSON round trip."""
    return json.loads(json.dumps(detail or {}, allow_nan=False))


def timestamp_text(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def row_digest(
    *,
    prev_hash: str,
    created_at: dt.datetime,
    actor_id: int | None,
    action: str,
    object_type: str,
    object_id: str,
    team_id: int | None,
    detail: dict[str, Any],
) -> str:
    """SHA-256 of one event's content and its predecessor's hash (version 1 of the layout)."""
    content = {
        "v": 1,
        "prev": prev_hash,
        "created_at": timestamp_text(created_at),
        "actor": actor_id,
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "team": team_id,
        "detail": canonical(detail),
    }
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def event_digest(event: AuditEvent) -> str:
    return row_digest(
        prev_hash=event.prev_hash,
        created_at=event.created_at,
        actor_id=event.actor_id,
        action=event.action,
        object_type=event.object_type,
        object_id=event.object_id,
        team_id=event.team_id,
        detail=event.detail,
    )


def chain_append(event: AuditEvent, *, using: str) -> None:
    """Insert `event` at the head of the chain: database time, predecessor's hash, own hash."""
    from diagnostics.models import AuditEvent

    connection = connections[using]
    event.detail = detail_as_stored(event.detail)
    with transaction.atomic(using=using):
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                # Held until the outermost transaction ends: the next writer reads this row as its head.
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK_KEY])
                cursor.execute("SELECT clock_timestamp()")
                event.created_at = cursor.fetchone()[0]
            _link_and_insert(event, AuditEvent, using)
        else:
            with _thread_lock:
                event.created_at = timezone.now()
                _link_and_insert(event, AuditEvent, using)


def _link_and_insert(event: AuditEvent, model: type[AuditEvent], using: str) -> None:
    head = model.objects.using(using).order_by("-pk").values_list("row_hash", flat=True).first()
    event.prev_hash = head or GENESIS
    event.row_hash = event_digest(event)
    event.save_base(using=using, force_insert=True)


@dataclass(frozen=True)
class ChainBreak:
    event_id: int
    reason: str


@dataclass(frozen=True)
class ChainReport:
    rows: int
    head_id: int | None
    head_hash: str
    first_break: ChainBreak | None


def chain_verify(*, using: str = "default", chunk_size: int = 2000) -> ChainReport:
    """Walk the chain in id order; name the first row whose content or link does not fit."""
    from diagnostics.models import AuditEvent

    expected_prev, previous_id, rows = GENESIS, None, 0
    events: Iterator[AuditEvent] = AuditEvent.objects.using(using).order_by("pk").iterator(chunk_size=chunk_size)
    for event in events:
        rows += 1
        if event.prev_hash != expected_prev:
            after = f"row #{previous_id}" if previous_id is not None else "the start of the log"
            reason = (
                f"its link does not follow {after} (a row between them was deleted or changed, "
                "or this row was inserted out of the chain)"
            )
            return ChainReport(rows, previous_id, expected_prev, ChainBreak(event.pk, reason))
        if event_digest(event) != event.row_hash:
            reason = "its content does not match its hash (the row was edited, or inserted with a forged hash)"
            return ChainReport(rows, previous_id, expected_prev, ChainBreak(event.pk, reason))
        expected_prev, previous_id = event.row_hash, event.pk
    return ChainReport(rows, previous_id, expected_prev, None)
