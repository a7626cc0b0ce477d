"""The test database, cloned from a migrated template instead of migrated anew by every run.

Migrating an empty database costs several seconds of CPU, paid again by every run and by every pytest-xdist
process. The first run after a migration changes builds `test_portal_tpl_<hash>` once (under an advisory
lock, so concurrent runs build it once and never see it half-built) and every run then creates its own test
database from it with `CREATE DATABASE ... TEMPLATE`, which copies the files in well under a second. The hash
covers every migration file of every installed app and the Django version: a changed or added migration
builds a new template, and templates of other hashes are dropped when nobody is copying them.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import django
from django.apps import apps
from django.conf import settings
from django.db import connections

TEMPLATE_PREFIX = "test_portal_tpl_"
# pg_advisory_lock takes a bigint: the lock that serialises template builds on this PostgreSQL server.
_BUILD_LOCK = int.from_bytes(hashlib.sha256(b"portal test database template").digest()[:8], "big", signed=True)


def migrations_hash() -> str:
    """A digest of the schema the migrations build: each app's migration files and Django's version."""
    digest = hashlib.sha256(django.__version__.encode())
    for app in sorted(apps.get_app_configs(), key=lambda config: config.label):
        folder = Path(app.path) / "migrations"
        for path in sorted(folder.glob("*.py")) if folder.is_dir() else ():
            digest.update(f"{app.label}/{path.name}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _quote(name: str) -> str:
    return connections["default"].ops.quote_name(name)


def _maintenance_connection() -> Any:
    """An autocommit connection to the server's `postgres` database, where databases are created and dropped."""
    import psycopg2

    db = settings.DATABASES["default"]
    connection = psycopg2.connect(
        dbname="postgres",
        user=db.get("USER") or None,
        password=db.get("PASSWORD") or None,
        host=db.get("HOST") or "127.0.0.1",
        port=db.get("PORT") or 5432,
    )
    connection.autocommit = True
    return connection


def _databases(cursor: Any, pattern: str) -> list[str]:
    cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [pattern])
    return [row[0] for row in cursor.fetchall()]


def _build_template(template: str, verbosity: int) -> None:
    """Migrate a database under a temporary name and rename it to `template` only when it is complete."""
    connection = connections["default"]
    building = f"{template}_building_{os.getpid()}"
    original_name = connection.settings_dict["NAME"]
    original_test_name = connection.settings_dict["TEST"].get("NAME")
    connection.settings_dict["TEST"]["NAME"] = building
    try:
        connection.creation.create_test_db(verbosity=verbosity, autoclobber=True, serialize=False)
    finally:
        connection.creation.destroy_test_db(original_name, verbosity=0, keepdb=True)  # closes, restores NAME
        connection.settings_dict["TEST"]["NAME"] = original_test_name
    maintenance = _maintenance_connection()
    try:
        with maintenance.cursor() as cursor:
            cursor.execute(f"ALTER DATABASE {_quote(building)} RENAME TO {_quote(template)}")
    finally:
        maintenance.close()


def _ensure_template(verbosity: int) -> str:
    template = TEMPLATE_PREFIX + migrations_hash()
    maintenance = _maintenance_connection()
    try:
        with maintenance.cursor() as cursor:
            if _databases(cursor, template):
                return template
            cursor.execute("SELECT pg_advisory_lock(%s)", [_BUILD_LOCK])
            try:
                if _databases(cursor, template):  # another run built it while this one waited
                    return template
                for stale in _databases(cursor, f"{TEMPLATE_PREFIX}%\\_building\\_%"):
                    cursor.execute(f"DROP DATABASE IF EXISTS {_quote(stale)}")  # a build that died half-way
                _build_template(template, verbosity)
                for old in _databases(cursor, f"{TEMPLATE_PREFIX}%"):
                    if old != template:
                        _drop_if_unused(cursor, old)
            finally:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [_BUILD_LOCK])
    finally:
        maintenance.close()
    return template


def _drop_if_unused(cursor: Any, name: str) -> None:
    import psycopg2

    try:
        cursor.execute(f"DROP DATABASE IF EXISTS {_quote(name)}")
    except psycopg2.errors.ObjectInUse:
        pass  # a run of the older migrations is copying it; a later run drops it


def _create_from(cursor: Any, name: str, template: str) -> None:
    """CREATE DATABASE ... TEMPLATE, which PostgreSQL refuses while a session is connected to the template
    (a run building or dropping one): retried for a few seconds."""
    import psycopg2

    for attempt in range(20):
        try:
            cursor.execute(f"CREATE DATABASE {_quote(name)} TEMPLATE {_quote(template)}")
            return
        except psycopg2.errors.ObjectInUse:
            if attempt == 19:
                raise
            time.sleep(0.25)


def clone_test_database(*, verbosity: int = 0, serialize: bool = False) -> str:
    """Create this run's test database from the template and point the default connection at it.

    What Django's create_test_db does, with the copy in place of `migrate`; returns the original NAME,
    which `drop_test_database` restores.
    """
    import psycopg2

    connection = connections["default"]
    name = connection.creation._get_test_db_name()
    maintenance = _maintenance_connection()
    try:
        with maintenance.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {_quote(name)}")  # left by a killed run of the same name
            try:
                _create_from(cursor, name, _ensure_template(verbosity))
            except psycopg2.errors.InvalidCatalogName:  # a run of newer migrations dropped it meanwhile
                _create_from(cursor, name, _ensure_template(verbosity))
    finally:
        maintenance.close()
    original_name = connection.settings_dict["NAME"]
    connection.close()
    settings.DATABASES["default"]["NAME"] = name
    connection.settings_dict["NAME"] = name
    if serialize:
        connection._test_serialized_contents = connection.creation.serialize_db_to_string()
    connection.ensure_connection()
    return original_name


def drop_test_database(original_name: str) -> None:
    connections["default"].creation.destroy_test_db(original_name, verbosity=0)
