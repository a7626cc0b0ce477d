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
        cursor.execute(
            "INSERT INTO diagnostics_auditevent (created_at, action, object_type, object_id, detail) "
            "VALUES (now(), 'runtime.insert', '', '', '{}')"
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
