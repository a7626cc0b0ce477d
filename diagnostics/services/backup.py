"""Back up a portal and restore it into an empty one, losing nothing (docs/operations.md, "Backup and restore").

    python manage.py backup --to /backups/portal-2026-12-07
    python manage.py restore --from /backups/portal-2026-12-07      # into an empty database and storage

A backup is a folder: the database (`database.dump`, pg_dump's custom format, or `database.sqlite3`), every
file of the media storage under `media/` (films, derivatives, heatmaps, from MEDIA_ROOT or the bucket), the
model artifacts (`models/<sha256>/` from the bucket, or `model_folders/<key>/` for the folders models were
registered from) and `manifest.json`, written last, with the sha256 and size of every file.

Consistency: the database is dumped first, in one snapshot that also gives the names of every file its rows
refer to (services/backup_database.py); the storage is copied after, so every referenced file already
exists (a film is stored before its row commits, and the portal deletes only files no row names). Files
written after the snapshot are copied too. A referenced file missing from the storage fails the backup.

A restore checks the whole backup against its manifest before it touches anything, refuses a target that
is not empty (unless `force`), restores the database, then the files under their exact names, reads every
file back and compares its sha256, compares every table's row count with the snapshot's, and walks the
audit log's hash chain to the head the backup recorded.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from django.core.files.storage import default_storage
from django.db import connection

from diagnostics.audit_chain import GENESIS, chain_verify

from .audit import audit_record
from .backup_database import (
    PG_TABLES,
    SQLITE_TABLES,
    BackupError,
    DatabaseSnapshot,
    pg_dump_in_snapshot,
    pg_relations,
    pg_restore_into,
    sqlite_backup,
    sqlite_quote,
    sqlite_restore,
    sqlite_tables,
    table_row_counts,
)
from .backup_files import file_sha256, storage_copy_in, storage_copy_out, storage_names, storage_sha256
from .model_artifacts import model_artifacts_in_storage, model_storage

MANIFEST = "manifest.json"
FORMAT = 1
MEDIA, MODELS, MODEL_FOLDERS = "media", "models", "model_folders"

__all__ = ["BackupError", "BackupReport", "portal_backup", "portal_restore"]


@dataclass
class BackupReport:
    directory: Path
    files: int = 0
    bytes: int = 0
    referenced: int = 0
    rows: int = 0
    audit_head: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _safe_relative(name: str) -> str:
    """A storage name or manifest path as a relative POSIX path that stays inside the backup folder."""
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts or "\\" in name:
        raise BackupError(f"Refusing the file name {name!r}: it would leave the backup folder.")
    return path.as_posix()


def _folder_key(artifact_path: str) -> str:
    return hashlib.sha256(artifact_path.encode()).hexdigest()[:16]


# Backup


def portal_backup(*, destination: Path) -> BackupReport:
    """Write a backup of the configured database and storage into `destination` (missing or empty)."""
    destination = Path(destination)
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise BackupError(f"{destination} is not an empty folder: a backup goes into a new one.")
    destination.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    snapshot = _dump_database(destination)
    report = BackupReport(directory=destination, audit_head=snapshot.audit_head)
    entries = [_entry(destination, snapshot.file)]
    entries += _back_up_media(destination, snapshot, report)
    entries += _back_up_models(destination, snapshot)
    manifest = {
        "format": FORMAT,
        "created_at": started.isoformat(),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(),
        "database": {
            "engine": snapshot.engine,
            "file": snapshot.file,
            "server_version": snapshot.server_version,
            "migrations": snapshot.migrations,
            "row_counts": snapshot.row_counts,
            "audit_head": snapshot.audit_head,
        },
        "storage": {
            "media": _describe(default_storage),
            "models": "storage" if model_artifacts_in_storage() else "folders",
        },
        "models": _model_entries(snapshot),
        "files": entries,
    }
    # Written last, beside its final name: a folder without manifest.json is a backup that did not finish.
    partial = destination / f".{MANIFEST}.partial"
    partial.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(partial, destination / MANIFEST)
    report.files = len(entries)
    report.bytes = sum(entry["size"] for entry in entries)
    report.rows = sum(snapshot.row_counts.values())
    audit_record(
        action="backup.created",
        detail={"files": report.files, "bytes": report.bytes, "rows": report.rows, "database": snapshot.engine,
                "audit_head": snapshot.audit_head.get("id")},
    )  # fmt: skip
    return report


def _dump_database(destination: Path) -> DatabaseSnapshot:
    if connection.vendor == "postgresql":
        return pg_dump_in_snapshot(connection.settings_dict, destination / "database.dump")
    if connection.vendor == "sqlite":
        return sqlite_backup(connection.settings_dict["NAME"], destination / "database.sqlite3")
    raise BackupError(f"Backups of a {connection.vendor} database are not supported (PostgreSQL or SQLite).")


def _entry(destination: Path, relative: str, **extra: Any) -> dict[str, Any]:
    sha256, size = file_sha256(destination / relative)
    return {"path": relative, "sha256": sha256, "size": size, **extra}


def _describe(storage: Any) -> str:
    return "bucket" if getattr(storage, "bucket_name", None) else "filesystem"


def _back_up_media(destination: Path, snapshot: DatabaseSnapshot, report: BackupReport) -> list[dict[str, Any]]:
    names = set(storage_names(default_storage))
    missing = sorted(name for name in snapshot.referenced if name not in names and not default_storage.exists(name))
    if missing:
        raise BackupError(
            f"{len(missing)} files that rows refer to are not in the media storage (first: {', '.join(missing[:5])}): "
            "the portal has lost them already; nothing was backed up."
        )
    entries = []
    for name in sorted(names | snapshot.referenced):
        relative = f"{MEDIA}/{_safe_relative(name)}"
        sha256, size = storage_copy_out(default_storage, name, destination / relative)
        referenced = name in snapshot.referenced
        report.referenced += referenced
        entries.append({"path": relative, "sha256": sha256, "size": size, "referenced": referenced})
    return entries


def _back_up_models(destination: Path, snapshot: DatabaseSnapshot) -> list[dict[str, Any]]:
    entries = []
    if model_artifacts_in_storage():
        storage = model_storage()
        names = storage_names(storage)
        for model in snapshot.model_versions:
            if not any(name.startswith(f"{model['sha256']}/") for name in names):
                raise BackupError(f"The model {model['name']} is not in the model storage.")
        for name in names:
            relative = f"{MODELS}/{_safe_relative(name)}"
            sha256, size = storage_copy_out(storage, name, destination / relative)
            entries.append({"path": relative, "sha256": sha256, "size": size})
        return entries
    for artifact_path in sorted({model["artifact_path"] for model in snapshot.model_versions}):
        folder = Path(artifact_path)
        if not folder.is_dir():
            raise BackupError(f"The model folder {artifact_path} a registered model names does not exist.")
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            relative = f"{MODEL_FOLDERS}/{_folder_key(artifact_path)}/{path.relative_to(folder).as_posix()}"
            (destination / relative).parent.mkdir(parents=True, exist_ok=True)
            with path.open("rb") as source, (destination / relative).open("wb") as sink:
                while chunk := source.read(1 << 20):
                    sink.write(chunk)
            entries.append(_entry(destination, relative))
    return entries


def _model_entries(snapshot: DatabaseSnapshot) -> list[dict[str, str]]:
    folder = (
        (lambda model: f"{MODELS}/{model['sha256']}")
        if model_artifacts_in_storage()
        else (lambda model: f"{MODEL_FOLDERS}/{_folder_key(model['artifact_path'])}")
    )
    return [{**model, "folder": folder(model)} for model in snapshot.model_versions]


# Restore


def backup_read_manifest(source: Path) -> dict[str, Any]:
    path = Path(source) / MANIFEST
    if not path.is_file():
        raise BackupError(f"{source} holds no {MANIFEST}: not a backup, or one that did not finish.")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{path}: backup format {manifest.get('format')!r}, this portal reads format {FORMAT}.")
    for entry in manifest["files"]:
        _safe_relative(entry["path"])
    return manifest


def backup_verify(source: Path, manifest: dict[str, Any]) -> None:
    """Every file the manifest lists is in the backup with its size and sha256."""
    damaged = []
    for entry in manifest["files"]:
        path = Path(source) / entry["path"]
        if not path.is_file():
            damaged.append(f"{entry['path']} (missing)")
        elif file_sha256(path) != (entry["sha256"], entry["size"]):
            damaged.append(f"{entry['path']} (its sha256 or size differs from the manifest)")
    if damaged:
        raise BackupError(
            f"The backup in {source} is damaged, nothing was restored: {len(damaged)} files: {'; '.join(damaged[:5])}"
        )


@dataclass
class _Plan:
    """What a restore writes: (area, storage name or target path, backup file, sha256)."""

    media: list[tuple[str, Path, str]] = field(default_factory=list)
    model_objects: list[tuple[str, Path, str]] = field(default_factory=list)
    model_files: list[tuple[Path, Path, str]] = field(default_factory=list)


def _restore_plan(source: Path, manifest: dict[str, Any]) -> _Plan:
    plan = _Plan()
    by_folder: dict[str, list[dict[str, Any]]] = {}
    for entry in manifest["files"]:
        area, _, rest = entry["path"].partition("/")
        if area == MEDIA:
            plan.media.append((rest, source / entry["path"], entry["sha256"]))
        elif area in (MODELS, MODEL_FOLDERS):
            folder = "/".join(entry["path"].split("/", 2)[:2])
            by_folder.setdefault(folder, []).append(entry)
    in_storage = model_artifacts_in_storage()
    stored: set[str] = set()
    for model in manifest["models"]:
        for entry in by_folder.get(model["folder"], []):
            relative = entry["path"][len(model["folder"]) + 1 :]
            if in_storage:
                name = f"{model['sha256']}/{relative}"
                if name not in stored:  # one copy per sha256, as model_artifact_publish keeps it
                    stored.add(name)
                    plan.model_objects.append((name, source / entry["path"], entry["sha256"]))
            else:
                target = Path(model["artifact_path"]) / relative
                if target not in {t for t, _, _ in plan.model_files}:
                    plan.model_files.append((target, source / entry["path"], entry["sha256"]))
    if in_storage:  # objects of the model storage no row names (a model registered after the snapshot)
        for entry in manifest["files"]:
            area, _, rest = entry["path"].partition("/")
            if area == MODELS and rest not in stored:
                stored.add(rest)
                plan.model_objects.append((rest, source / entry["path"], entry["sha256"]))
    return plan


def _target_contents(plan: _Plan) -> list[str]:
    """Why the target is not empty (nothing: it is)."""
    found = []
    settings_dict = connection.settings_dict
    tables = pg_relations(settings_dict) if connection.vendor == "postgresql" else sqlite_tables(settings_dict["NAME"])
    if tables:
        found.append(f"the database {settings_dict['NAME']} has {len(tables)} tables")
    media = storage_names(default_storage)
    if media:
        found.append(f"the media storage ({_describe(default_storage)}) holds {len(media)} files")
    if model_artifacts_in_storage() and (models := storage_names(model_storage())):
        found.append(f"the model storage holds {len(models)} files")
    differing = [
        str(target) for target, _, sha256 in plan.model_files if target.exists() and file_sha256(target)[0] != sha256
    ]
    if differing:
        found.append(f"model folders hold other files under the same names ({', '.join(differing[:3])})")
    return found


def portal_restore(*, source: Path, force: bool = False) -> BackupReport:
    """Restore the backup in `source` into the configured database and storage, which must be empty
    (`force`: restore over what is there: tables dropped and recreated, same-named files replaced)."""
    source = Path(source)
    manifest = backup_read_manifest(source)
    backup_verify(source, manifest)
    database = manifest["database"]
    if database["engine"] != connection.vendor:
        raise BackupError(
            f"This backup holds a {database['engine']} database; the portal is configured with {connection.vendor}."
        )
    plan = _restore_plan(source, manifest)
    found = _target_contents(plan)
    if found and not force:
        raise BackupError(
            f"Refusing to restore into a target that is not empty: {'; '.join(found)}. "
            "Restore into an empty database and storage, or pass --force to restore over them."
        )
    connection.close()  # no session of ours holds the target while it is replaced
    if connection.vendor == "postgresql":
        pg_restore_into(connection.settings_dict, source / database["file"], clean=bool(found))
    else:
        sqlite_restore(source / database["file"], connection.settings_dict["NAME"])
    for name, path, _ in plan.media:
        storage_copy_in(default_storage, name, path, overwrite=force)
    for name, path, _ in plan.model_objects:
        storage_copy_in(model_storage(), name, path, overwrite=force)
    for target, path, sha256 in plan.model_files:
        if not (target.exists() and file_sha256(target)[0] == sha256):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    report = _check_restored(source, manifest, plan)
    audit_record(
        action="backup.restored",
        detail={"files": report.files, "bytes": report.bytes, "rows": report.rows,
                "backup_created_at": manifest["created_at"], "audit_head": report.audit_head.get("id")},
    )  # fmt: skip
    return report


def _stored_sha256(storage: Any, name: str) -> str | None:
    """The sha256 of a restored file read back (a path when `storage` is None), None when it cannot be read."""
    try:
        return (file_sha256(Path(name)) if storage is None else storage_sha256(storage, name))[0]
    except (OSError, ValueError):
        return None


def _check_restored(source: Path, manifest: dict[str, Any], plan: _Plan) -> BackupReport:
    """Read back every restored file, count every table's rows, walk the audit chain."""
    wrong = [name for name, _, sha256 in plan.media if _stored_sha256(default_storage, name) != sha256]
    wrong += [name for name, _, sha256 in plan.model_objects if _stored_sha256(model_storage(), name) != sha256]
    wrong += [str(target) for target, _, sha256 in plan.model_files if _stored_sha256(None, str(target)) != sha256]
    if wrong:
        raise BackupError(f"{len(wrong)} restored files read back differently (first: {', '.join(wrong[:5])}).")
    database = manifest["database"]
    quote = connection.ops.quote_name if connection.vendor == "postgresql" else sqlite_quote
    with connection.cursor() as cursor:
        counts = table_row_counts(cursor, PG_TABLES if connection.vendor == "postgresql" else SQLITE_TABLES, quote)
    differing = [f"{table}: {counts.get(table)} rows, {rows} backed up"
                 for table, rows in database["row_counts"].items() if counts.get(table) != rows]  # fmt: skip
    if differing:
        raise BackupError(f"The restored database differs from the backup: {'; '.join(differing[:5])}.")
    chain = chain_verify()
    head = database["audit_head"]
    if chain.first_break is not None:
        raise BackupError(
            f"The restored audit log does not verify: row #{chain.first_break.event_id}: {chain.first_break.reason}"
        )
    if (chain.head_id, chain.head_hash) != ((head["id"], head["hash"]) if head else (None, GENESIS)):
        raise BackupError(f"The restored audit log ends at row #{chain.head_id}, the backup's at #{head.get('id')}.")
    media_files = sum(1 for entry in manifest["files"] if entry["path"].startswith(f"{MEDIA}/"))
    report = BackupReport(
        directory=source,
        files=len(plan.media) + len(plan.model_objects) + len(plan.model_files),
        bytes=sum(entry["size"] for entry in manifest["files"]),
        referenced=sum(1 for entry in manifest["files"] if entry.get("referenced")),
        rows=sum(counts.values()),
        audit_head=head,
    )
    report.notes.append(
        f"{media_files} media files and {report.files - media_files} model files read back, sha256 equal"
    )
    report.notes.append(f"{len(counts)} tables, {report.rows} rows; audit log verified to row #{chain.head_id}")
    if connection.vendor == "postgresql":
        report.notes.append("grants are not restored: run `manage.py grant_runtime_role` for the runtime role")
    return report
