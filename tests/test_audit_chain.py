"""The audit log is a hash chain that `manage.py audit_verify` walks: a row edited, inserted or deleted
behind the application's back (here: directly in SQL, as the database superuser) is named."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections
from django.utils import timezone

from diagnostics.audit_chain import GENESIS, chain_verify, row_digest
from diagnostics.models import AuditEvent
from diagnostics.services.audit import audit_record


def _verify() -> str:
    from io import StringIO

    out = StringIO()
    call_command("audit_verify", stdout=out)
    return out.getvalue()


def _broken_at() -> str:
    with pytest.raises(CommandError) as info:
        _verify()
    return str(info.value)


def _as_superuser(statement: str, params: list | None = None) -> None:
    """SQL the application never runs: the append-only and created_at triggers switched off, as a
    database superuser can."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(statement, params or [])
        cursor.execute("SET LOCAL session_replication_role = origin")


@pytest.fixture
def chain(db) -> list[AuditEvent]:
    return [audit_record(action="test.event", detail={"n": n, "score": n / 3, "big": 1e16}) for n in range(5)]


def test_events_are_linked_in_order_and_the_chain_verifies(chain):
    rows = list(AuditEvent.objects.order_by("pk"))
    assert [e.pk for e in rows] == [e.pk for e in chain]
    assert all(e.prev_hash == p.row_hash for p, e in zip(rows, rows[1:], strict=False))
    first = AuditEvent.objects.order_by("pk").first()
    assert first.prev_hash == GENESIS or first.pk != chain[0].pk  # earlier rows of the test are chained too
    # What was hashed is what the database gives back (jsonb turns 1e16 into an integer).
    assert chain_verify().first_break is None
    assert f"head row #{chain[-1].pk}" in _verify()


def test_created_at_is_the_database_clock(chain):
    with connection.cursor() as cursor:
        cursor.execute("SELECT now(), clock_timestamp()")
        started, now = cursor.fetchone()
    stored = AuditEvent.objects.get(pk=chain[0].pk).created_at
    assert started <= stored <= now
    assert stored == chain[0].created_at  # the value hashed is the value stored


def test_a_row_edited_in_sql_is_named(chain):
    _as_superuser("UPDATE diagnostics_auditevent SET detail = '{\"n\": 99}' WHERE id = %s", [chain[2].pk])
    message = _broken_at()
    assert f"row #{chain[2].pk}" in message and "content does not match its hash" in message


def test_a_row_backdated_in_sql_is_named(chain):
    _as_superuser(
        "UPDATE diagnostics_auditevent SET created_at = created_at - interval '30 days' WHERE id = %s", [chain[1].pk]
    )
    assert f"row #{chain[1].pk}" in _broken_at()


def test_a_row_edited_with_its_hash_recomputed_breaks_the_next_link(chain):
    event = AuditEvent.objects.get(pk=chain[2].pk)
    forged = row_digest(
        prev_hash=event.prev_hash,
        created_at=event.created_at,
        actor_id=None,
        action="test.forged",
        object_type="",
        object_id="",
        team_id=None,
        detail=event.detail,
    )
    _as_superuser(
        "UPDATE diagnostics_auditevent SET action = 'test.forged', row_hash = %s WHERE id = %s", [forged, event.pk]
    )
    message = _broken_at()
    assert f"row #{chain[3].pk}" in message and f"does not follow row #{chain[2].pk}" in message


def test_a_deleted_row_is_named_by_the_row_after_it(chain):
    _as_superuser("DELETE FROM diagnostics_auditevent WHERE id = %s", [chain[2].pk])
    message = _broken_at()
    assert f"row #{chain[3].pk}" in message and f"does not follow row #{chain[1].pk}" in message


def test_a_row_inserted_in_sql_is_named(chain):
    head = AuditEvent.objects.order_by("-pk").first()
    backdated = timezone.now() - dt.timedelta(days=30)
    _as_superuser(
        "INSERT INTO diagnostics_auditevent (created_at, action, object_type, object_id, detail, prev_hash, row_hash) "
        "VALUES (%s, 'auth.login', '', '', '{}', %s, %s)",
        [backdated, head.row_hash, "f" * 64],
    )
    inserted = AuditEvent.objects.order_by("-pk").first()
    assert f"row #{inserted.pk}" in _broken_at()


def test_audit_events_are_never_bulk_created(db):
    with pytest.raises(PermissionError):
        AuditEvent.objects.bulk_create([AuditEvent(action="test.bulk")])


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_never_fork_the_chain():
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for n in range(15):
                audit_record(action="test.concurrent", detail={"worker": worker, "n": n})
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(worker,)) for worker in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert AuditEvent.objects.filter(action="test.concurrent").count() == 90
    report = chain_verify()
    assert report.first_break is None and report.rows == AuditEvent.objects.count()
