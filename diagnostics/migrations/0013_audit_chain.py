"""The audit log becomes a hash chain, dated by the database (diagnostics/audit_chain.py).

Existing events are linked in id order (the order they were appended). The append-only guards are
lifted only while this migration backfills the two new columns, and put back before it ends; on
PostgreSQL a trigger now also refuses a `created_at` outside [start of the transaction, now], so a row
cannot be backdated through the runtime role.
"""

import django.db.models.functions.datetime
from django.db import migrations, models

from diagnostics.audit_chain import GENESIS, detail_as_stored, row_digest

APPEND_ONLY_TRIGGER = "diagnostics_auditevent_append_only"
POSTGRES_CREATED_AT_GUARD = """
CREATE OR REPLACE FUNCTION diagnostics_audit_created_at_guard() RETURNS trigger AS $$
BEGIN
    IF NEW.created_at IS NULL OR NEW.created_at < now() OR NEW.created_at > clock_timestamp() THEN
        RAISE EXCEPTION 'audit events are dated by the database: created_at % refused', NEW.created_at;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER diagnostics_auditevent_created_at_guard
    BEFORE INSERT ON diagnostics_auditevent
    FOR EACH ROW EXECUTE FUNCTION diagnostics_audit_created_at_guard();
"""
POSTGRES_CREATED_AT_GUARD_DOWN = """
DROP TRIGGER IF EXISTS diagnostics_auditevent_created_at_guard ON diagnostics_auditevent;
DROP FUNCTION IF EXISTS diagnostics_audit_created_at_guard();
"""
# 0003's SQLite triggers (SQLite rebuilds the table to add a column, which drops them).
SQLITE_GUARDS = [
    """CREATE TRIGGER diagnostics_auditevent_no_update BEFORE UPDATE ON diagnostics_auditevent
       BEGIN SELECT RAISE(ABORT, 'audit events are append-only (UPDATE refused)'); END;""",
    """CREATE TRIGGER diagnostics_auditevent_no_delete BEFORE DELETE ON diagnostics_auditevent
       BEGIN SELECT RAISE(ABORT, 'audit events are append-only (DELETE refused)'); END;""",
]
SQLITE_GUARDS_DOWN = [
    "DROP TRIGGER IF EXISTS diagnostics_auditevent_no_update;",
    "DROP TRIGGER IF EXISTS diagnostics_auditevent_no_delete;",
]


def lift_append_only(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        schema_editor.execute(f"ALTER TABLE diagnostics_auditevent DISABLE TRIGGER {APPEND_ONLY_TRIGGER}")
    elif schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_GUARDS_DOWN:
            schema_editor.execute(statement)


def restore_append_only(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE diagnostics_auditevent ENABLE TRIGGER {APPEND_ONLY_TRIGGER}")
    elif schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_GUARDS:
            schema_editor.execute(statement)


def add_created_at_guard(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_CREATED_AT_GUARD, params=None)


def drop_created_at_guard(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_CREATED_AT_GUARD_DOWN, params=None)


def link_existing_events(apps, schema_editor):
    AuditEvent = apps.get_model("diagnostics", "AuditEvent")
    db = schema_editor.connection.alias
    prev = GENESIS
    for event in AuditEvent.objects.using(db).order_by("pk").iterator(chunk_size=2000):
        detail = detail_as_stored(event.detail)
        row_hash = row_digest(
            prev_hash=prev,
            created_at=event.created_at,
            actor_id=event.actor_id,
            action=event.action,
            object_type=event.object_type,
            object_id=event.object_id,
            team_id=event.team_id,
            detail=detail,
        )
        AuditEvent.objects.using(db).filter(pk=event.pk).update(prev_hash=prev, row_hash=row_hash, detail=detail)
        prev = row_hash


def unlink_events(apps, schema_editor):
    AuditEvent = apps.get_model("diagnostics", "AuditEvent")
    AuditEvent.objects.using(schema_editor.connection.alias).update(prev_hash="", row_hash="")


class Migration(migrations.Migration):
    dependencies = [("diagnostics", "0012_admin_names")]

    operations = [
        migrations.RunPython(lift_append_only, restore_append_only),
        migrations.AlterField(
            model_name="auditevent",
            name="created_at",
            field=models.DateTimeField(db_default=django.db.models.functions.datetime.Now(), db_index=True),
        ),
        migrations.AddField(
            model_name="auditevent",
            name="prev_hash",
            field=models.CharField(default="", editable=False, max_length=64),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="auditevent",
            name="row_hash",
            field=models.CharField(default="", editable=False, max_length=64),
            preserve_default=False,
        ),
        migrations.RunPython(link_existing_events, unlink_events),
        migrations.AlterField(
            model_name="auditevent",
            name="prev_hash",
            field=models.CharField(editable=False, max_length=64, unique=True),
        ),
        migrations.RunPython(restore_append_only, lift_append_only),
        migrations.RunPython(add_created_at_guard, drop_created_at_guard),
    ]
