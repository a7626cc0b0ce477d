"""The portal's processes connect as a role that cannot erase the audit log (grant_runtime_role)."""

from __future__ import annotations

import os

import psycopg2
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from diagnostics.services.audit import audit_record

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def runtime_role():
    role = f"portal_app_test_{os.getpid()}"
    call_command("grant_runtime_role", role=role, password_env="")
    db = settings.DATABASES["default"]
    runtime = psycopg2.connect(dbname=db["NAME"], user=role, host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432)
    runtime.autocommit = True
    try:
        yield runtime
    finally:
        runtime.close()
        with connection.cursor() as cursor:
            cursor.execute(f'DROP OWNED BY "{role}"; DROP ROLE "{role}"')


def _refused(runtime, statement: str) -> str:
    with pytest.raises(psycopg2.Error) as info, runtime.cursor() as cursor:
        cursor.execute(statement)
    return str(info.value)


def test_the_runtime_role_works_the_app_but_cannot_erase_the_audit_log(runtime_role, patient):
    audit_record(action="test.event", detail={})
    with runtime_role.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM diagnostics_auditevent")
        assert cursor.fetchone()[0] >= 1
        cursor.execute(  # the application's own path (AuditEvent.save) is tested with the role below
            "INSERT INTO diagnostics_auditevent (created_at, action, object_type, object_id, detail, prev_hash, "
            "row_hash) VALUES (now(), 'runtime.insert', '', '', '{}', %s, %s)",
            ["a" * 64, "b" * 64],
        )
        cursor.execute("UPDATE diagnostics_patient SET name = 'Renamed' WHERE id = %s", [patient.pk])
        assert cursor.rowcount == 1

    assert "permission denied" in _refused(runtime_role, "TRUNCATE diagnostics_auditevent")
    assert "permission denied" in _refused(runtime_role, "DELETE FROM diagnostics_auditevent")
    assert "permission denied" in _refused(runtime_role, "UPDATE diagnostics_auditevent SET action = 'x'")
    assert "must be owner" in _refused(
        runtime_role, "ALTER TABLE diagnostics_auditevent DISABLE TRIGGER diagnostics_auditevent_append_only"
    )
    assert "permission denied" in _refused(runtime_role, "TRUNCATE diagnostics_patient")
    assert "permission denied" in _refused(runtime_role, "CREATE TABLE sneaky (id int)")


def test_tables_of_later_migrations_are_granted_too(runtime_role):
    with connection.cursor() as cursor:  # the owner migrating
        cursor.execute("CREATE TABLE diagnostics_later (id serial PRIMARY KEY, note text)")
    try:
        with runtime_role.cursor() as cursor:
            cursor.execute("INSERT INTO diagnostics_later (note) VALUES ('ok') RETURNING id")
            assert cursor.fetchone()[0] == 1
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE diagnostics_later")


def test_the_runtime_role_cannot_erase_or_rewrite_the_admin_log(runtime_role, owner):
    from django.contrib.admin.models import CHANGE, LogEntry

    LogEntry.objects.log_actions(user_id=owner.pk, queryset=[owner], action_flag=CHANGE, change_message="x")
    with runtime_role.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM django_admin_log")
        assert cursor.fetchone()[0] >= 1
    assert "permission denied" in _refused(runtime_role, "DELETE FROM django_admin_log")
    assert "permission denied" in _refused(runtime_role, "UPDATE django_admin_log SET change_message = ''")
    assert "permission denied" in _refused(runtime_role, "TRUNCATE django_admin_log")


def test_the_runtime_role_cannot_backdate_an_audit_event(runtime_role):
    insert = (
        "INSERT INTO diagnostics_auditevent (created_at, action, object_type, object_id, detail, prev_hash, row_hash) "
        "VALUES ({created_at}, 'auth.login', '', '', '{{}}', %s, %s)"
    )
    for backdated in ("now() - interval '30 days'", "now() - interval '1 second'", "now() + interval '1 hour'"):
        refused = _refused(runtime_role, insert.format(created_at=backdated) % ("'c'", "'d'"))
        assert "dated by the database" in refused, backdated
    assert "must be owner" in _refused(
        runtime_role, "ALTER TABLE diagnostics_auditevent DISABLE TRIGGER diagnostics_auditevent_created_at_guard"
    )
    assert "must be owner" in _refused(runtime_role, "ALTER SEQUENCE diagnostics_auditevent_id_seq RESTART 1")
    assert "permission denied" in _refused(runtime_role, "SELECT setval('diagnostics_auditevent_id_seq', 1)")
    with runtime_role.cursor() as cursor:  # left to the database, the time is its own
        cursor.execute(
            "INSERT INTO diagnostics_auditevent (action, object_type, object_id, detail, prev_hash, row_hash) "
            "VALUES ('runtime.default_time', '', '', '{}', 'e', 'f') RETURNING created_at, now()"
        )
        created_at, now = cursor.fetchone()
        assert created_at >= now


def test_the_portal_writes_a_verifiable_chain_as_the_runtime_role(runtime_role):
    """The application's own append (advisory lock, database clock, hash) works with the runtime role's
    privileges: Django's connection switched to that role."""
    from diagnostics.audit_chain import chain_verify
    from diagnostics.models import AuditEvent

    role = runtime_role.info.user
    with connection.cursor() as cursor:
        cursor.execute(f'SET ROLE "{role}"')
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_user")
            assert cursor.fetchone()[0] == role
        for n in range(3):
            audit_record(action="runtime.app", detail={"n": n})
        assert AuditEvent.objects.filter(action="runtime.app").count() == 3
        assert chain_verify().first_break is None
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET ROLE")
