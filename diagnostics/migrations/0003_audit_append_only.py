"""The database itself refuses to change or delete audit events, whatever the application does."""

from django.db import migrations

POSTGRES_UP = """
CREATE OR REPLACE FUNCTION diagnostics_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER diagnostics_auditevent_append_only
    BEFORE UPDATE OR DELETE ON diagnostics_auditevent
    FOR EACH ROW EXECUTE FUNCTION diagnostics_audit_append_only();
"""
POSTGRES_DOWN = """
DROP TRIGGER IF EXISTS diagnostics_auditevent_append_only ON diagnostics_auditevent;
DROP FUNCTION IF EXISTS diagnostics_audit_append_only();
"""
SQLITE_UP = [
    """CREATE TRIGGER diagnostics_auditevent_no_update BEFORE UPDATE ON diagnostics_auditevent
       BEGIN SELECT RAISE(ABORT, 'audit events are append-only (UPDATE refused)'); END;""",
    """CREATE TRIGGER diagnostics_auditevent_no_delete BEFORE DELETE ON diagnostics_auditevent
       BEGIN SELECT RAISE(ABORT, 'audit events are append-only (DELETE refused)'); END;""",
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS diagnostics_auditevent_no_update;",
    "DROP TRIGGER IF EXISTS diagnostics_auditevent_no_delete;",
]


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_UP, params=None)
    elif schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_UP:
            schema_editor.execute(statement)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_DOWN, params=None)
    elif schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_DOWN:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("diagnostics", "0002_scheduled_retraining_off")]

    operations = [migrations.RunPython(forwards, backwards)]
