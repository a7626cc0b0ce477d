"""The database half of a backup (services/backup.py): a dump taken in one snapshot, the files its rows
name read in that same snapshot, and a restore into an empty database.

PostgreSQL: a REPEATABLE READ transaction exports its snapshot (`pg_export_snapshot`), reads every
FileField's names and the registered models, and `pg_dump --snapshot` dumps exactly what it saw (custom
format); the transaction stays open until the dump ends. `pg_restore` brings back the tables, their rows,
sequences, the audit log's triggers (append-only, created_at guard: pg_dump puts triggers after the data,
so the rows load before the guard exists) and constraints, owned by the restoring role; grants are not
restored (roles belong to the server, not the database): `grant_runtime_role` gives them again.

SQLite (the embedded default): the sqlite3 backup API copies the database page by page as one consistent
snapshot; the names are read from that copy.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess  # nosec B404
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
from django.apps import apps
from django.db import models
from psycopg2 import sql
from psycopg2.extensions import ISOLATION_LEVEL_REPEATABLE_READ


class BackupError(Exception):
    """A backup or restore that cannot be done safely; the message says why and what to do."""


@dataclass
class DatabaseSnapshot:
    """What the dumped rows name: every FileField's stored name, and each registered model."""

    engine: str
    file: str
    referenced: set[str] = field(default_factory=set)
    model_versions: list[dict[str, str]] = field(default_factory=list)
    migrations: list[str] = field(default_factory=list)
    server_version: str = ""
    # Rows per table, and the audit log's head (id, hash): what a restore must give back.
    row_counts: dict[str, int] = field(default_factory=dict)
    audit_head: dict[str, Any] = field(default_factory=dict)


def file_columns() -> list[tuple[str, str]]:
    """(table, column) of every FileField of every installed model."""
    return [
        (model._meta.db_table, model_field.column)
        for model in apps.get_models()
        for model_field in model._meta.concrete_fields
        if isinstance(model_field, models.FileField)
    ]


PG_TABLES = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1"
SQLITE_TABLES = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY 1"


def table_row_counts(cursor: Any, tables_query: str, quote: Any) -> dict[str, int]:
    cursor.execute(tables_query)
    counts = {}
    for (table,) in cursor.fetchall():
        cursor.execute(f"SELECT count(*) FROM {quote(table)}")  # noqa: S608  # nosec B608
        counts[table] = int(cursor.fetchone()[0])
    return counts


def _read_snapshot(cursor: Any, snapshot: DatabaseSnapshot, quote: Any, tables_query: str) -> None:
    """Fill `snapshot` from a cursor that sees the dumped state (`quote` quotes an identifier)."""
    snapshot.row_counts = table_row_counts(cursor, tables_query, quote)
    cursor.execute("SELECT id, row_hash FROM diagnostics_auditevent ORDER BY id DESC LIMIT 1")
    head = cursor.fetchone()
    snapshot.audit_head = {"id": head[0], "hash": head[1]} if head else {}
    for table, column in file_columns():
        cursor.execute(f"SELECT {quote(column)} FROM {quote(table)} WHERE {quote(column)} <> ''")  # noqa: S608  # nosec B608
        snapshot.referenced.update(name for (name,) in cursor.fetchall() if name)
    cursor.execute("SELECT name, sha256, artifact_path FROM diagnostics_modelversion ORDER BY id")
    snapshot.model_versions = [
        {"name": name, "sha256": sha256, "artifact_path": path} for name, sha256, path in cursor.fetchall()
    ]
    cursor.execute("SELECT app || '.' || name FROM django_migrations ORDER BY id")
    snapshot.migrations = [name for (name,) in cursor.fetchall()]


# PostgreSQL


def pg_environment(settings_dict: dict[str, Any]) -> dict[str, str]:
    """The libpq environment for pg_dump/pg_restore naming the database Django is configured with."""
    env = dict(os.environ)
    for variable, key in (("PGHOST", "HOST"), ("PGPORT", "PORT"), ("PGUSER", "USER"), ("PGPASSWORD", "PASSWORD")):
        if settings_dict.get(key):
            env[variable] = str(settings_dict[key])
    options = settings_dict.get("OPTIONS") or {}
    for variable, key in (("PGSSLMODE", "sslmode"), ("PGSSLROOTCERT", "sslrootcert"), ("PGOPTIONS", "options")):
        if options.get(key):
            env[variable] = str(options[key])
    env["PGDATABASE"] = str(settings_dict["NAME"])
    return env


def _pg_connect(settings_dict: dict[str, Any]) -> Any:
    options = settings_dict.get("OPTIONS") or {}
    return psycopg2.connect(
        dbname=settings_dict["NAME"],
        user=settings_dict.get("USER") or None,
        password=settings_dict.get("PASSWORD") or None,
        host=settings_dict.get("HOST") or None,
        port=settings_dict.get("PORT") or None,
        **{key: options[key] for key in ("sslmode", "sslrootcert", "options") if options.get(key)},
    )


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} is not installed (Debian: postgresql-client, the server's major version or newer).")
    return found


def _run(command: list[str], env: dict[str, str], what: str) -> None:
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)  # noqa: S603  # nosec B603
    if result.returncode != 0:
        raise BackupError(f"{what} failed (exit status {result.returncode}): {result.stderr.strip()[-2000:]}")


def pg_dump_in_snapshot(settings_dict: dict[str, Any], target: Path) -> DatabaseSnapshot:
    """Dump the database to `target` (custom format) and read what its rows name, in one snapshot."""
    pg_dump = _tool("pg_dump")
    snapshot = DatabaseSnapshot(engine="postgresql", file=target.name)
    connection = _pg_connect(settings_dict)
    try:
        connection.set_session(isolation_level=ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_export_snapshot(), current_setting('server_version')")
            snapshot_id, snapshot.server_version = cursor.fetchone()
            _read_snapshot(cursor, snapshot, lambda name: sql.Identifier(name).as_string(connection), PG_TABLES)
            # The exported snapshot lives as long as this transaction: pg_dump imports it while it is open.
            _run(
                [pg_dump, "--format=custom", f"--snapshot={snapshot_id}", "--no-password", f"--file={target}"],
                pg_environment(settings_dict),
                "pg_dump",
            )
        connection.rollback()
    finally:
        connection.close()
    return snapshot


def pg_relations(settings_dict: dict[str, Any]) -> list[str]:
    """The tables, views and sequences of the database outside PostgreSQL's own schemas."""
    connection = _pg_connect(settings_dict)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S') AND n.nspname <> 'information_schema' "
                "AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1"
            )
            return [name for (name,) in cursor.fetchall()]
    finally:
        connection.close()


def pg_restore_into(settings_dict: dict[str, Any], dump: Path, *, clean: bool) -> None:
    """Restore `dump` into the configured database in one transaction (nothing is left half-restored)."""
    command = [_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction",
               "--no-password", f"--dbname={settings_dict['NAME']}"]  # fmt: skip
    if clean:
        command += ["--clean", "--if-exists"]
    _run([*command, str(dump)], pg_environment(settings_dict), "pg_restore")


# SQLite


def sqlite_quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@contextmanager
def _sqlite(path: Path | str) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(str(path))
    try:
        yield connection
    finally:
        connection.close()


def sqlite_backup(source: Path | str, target: Path) -> DatabaseSnapshot:
    """Copy the SQLite database with the backup API (one consistent snapshot) and read the copy."""
    snapshot = DatabaseSnapshot(engine="sqlite", file=target.name, server_version=sqlite3.sqlite_version)
    with _sqlite(source) as live, _sqlite(target) as copy:
        live.backup(copy)
    with _sqlite(target) as copy:
        _read_snapshot(copy.cursor(), snapshot, sqlite_quote, SQLITE_TABLES)
    return snapshot


def sqlite_tables(path: Path | str) -> list[str]:
    if not Path(path).exists():
        return []
    with _sqlite(path) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        return sorted(name for (name,) in rows)


def sqlite_restore(backup: Path, target: Path | str) -> None:
    """Copy the backed-up database over `target` page by page (the backup API replaces its content)."""
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    with _sqlite(backup) as source, _sqlite(target) as destination:
        source.backup(destination)
