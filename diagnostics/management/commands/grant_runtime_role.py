"""Give the portal's processes a PostgreSQL role that cannot erase the audit log (docs/operations.md).

Run by the owner that migrates, after `migrate` (compose's `migrate` service does both):

    python manage.py grant_runtime_role --role portal_app   # password from $RUNTIME_DB_PASSWORD

The runtime role (web, workers, beat, the DICOM receiver connect as it) may read and write the
application's tables, but on the audit log and on Django's admin log only SELECT and INSERT; it owns
nothing, so it can neither TRUNCATE a table nor ALTER one (disabling the append-only trigger or the
audit log's created_at guard needs the owner). Tables that later migrations create get the same
grants (ALTER DEFAULT PRIVILEGES).

Run it as the role that owns the tables (the one `migrate` ran as) or a superuser: GRANT and REVOKE
on a table need its owner, ALTER ROLE ... NOSUPERUSER needs a superuser when the runtime role exists
and is one, and CREATE ROLE needs CREATEROLE.
"""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from psycopg2 import sql

AUDIT_TABLE = "diagnostics_auditevent"
# Append-only for the runtime role: no UPDATE, DELETE or TRUNCATE (Django's admin only ever inserts here).
APPEND_ONLY_TABLES = (AUDIT_TABLE, "django_admin_log")


class Command(BaseCommand):
    help = "Create or update the runtime database role: read/write, but append-only on the audit log."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--role", default="portal_app")
        parser.add_argument("--password-env", default="RUNTIME_DB_PASSWORD",
                            help="environment variable holding the role's password (unset: no password)")  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        if connection.vendor != "postgresql":
            raise CommandError("Runtime roles are a PostgreSQL feature; the embedded SQLite default has none.")
        role = options["role"]
        password = os.environ.get(options["password_env"] or "")
        for statement, params in runtime_role_statements(role, connection.settings_dict["NAME"], password):
            with connection.cursor() as cursor:
                cursor.execute(statement, params)
        self.stdout.write(
            f"Runtime role {role}: read/write on the application's tables, append-only audit log and admin log."
        )


def runtime_role_statements(role: str, database: str, password: str | None) -> list[tuple[Any, list[Any]]]:
    name, db = sql.Identifier(role), sql.Identifier(database)
    login = sql.SQL("LOGIN PASSWORD %s") if password else sql.SQL("LOGIN")
    params = [password] if password else []
    create = sql.SQL(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {literal}) THEN CREATE ROLE {name}; "
        "END IF; END $$"
    ).format(literal=sql.Literal(role), name=name)
    return [
        (create, []),
        (sql.SQL("ALTER ROLE {} NOSUPERUSER NOCREATEDB NOCREATEROLE ").format(name) + login, params),
        (sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(db, name), []),
        (sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(name), []),
        (sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}").format(name), []),
        (sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(name), []),
        *(
            (sql.SQL("REVOKE UPDATE, DELETE, TRUNCATE ON {} FROM {}").format(sql.Identifier(table), name), [])
            for table in APPEND_ONLY_TABLES
        ),
        (
            sql.SQL(
                "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {}"
            ).format(name),
            [],
        ),  # fmt: skip
        (sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {}").format(name), []),
    ]
