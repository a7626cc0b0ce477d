"""The files half of a backup (services/backup.py): list a storage, copy a file out of it or into it under
its exact name, and hash what a storage holds, for the local file system (MEDIA_ROOT) and the bucket alike."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import IO

from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage

from .backup_database import BackupError

CHUNK = 1 << 20


def storage_names(storage: Storage) -> list[str]:
    """Every file in `storage`, as storage names."""
    if isinstance(storage, FileSystemStorage):
        root = Path(storage.location)
        if not root.is_dir():
            return []
        return sorted(
            (Path(folder) / name).relative_to(root).as_posix() for folder, _, names in os.walk(root) for name in names
        )
    bucket = getattr(storage, "bucket", None)
    if bucket is not None:  # S3: one listing request per 1,000 objects
        location = str(getattr(storage, "location", "")).strip("/")
        prefix = f"{location}/" if location else ""
        return sorted(summary.key[len(prefix) :] for summary in bucket.objects.filter(Prefix=prefix))
    return _listdir_names(storage, "")


def _listdir_names(storage: Storage, prefix: str) -> list[str]:
    directories, files = storage.listdir(prefix)
    names = [f"{prefix}{name}" for name in files]
    for directory in directories:
        names += _listdir_names(storage, f"{prefix}{directory}/")
    return sorted(names)


def _copy(source: IO[bytes], sink: IO[bytes]) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while chunk := source.read(CHUNK):
        digest.update(chunk)
        sink.write(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def file_sha256(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def storage_copy_out(storage: Storage, name: str, target: Path) -> tuple[str, int]:
    """Copy one stored file to `target`; returns its sha256 and size."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with storage.open(name, "rb") as source, target.open("wb") as sink:
        return _copy(source, sink)


def storage_copy_in(storage: Storage, name: str, source: Path, *, overwrite: bool) -> None:
    """Store `source` under exactly `name` (a row names it); an existing file of that name is replaced
    only with `overwrite`."""
    if storage.exists(name):
        if not overwrite:
            raise BackupError(f"{name} is already in the target storage.")
        storage.delete(name)
    with source.open("rb") as handle:
        saved = storage.save(name, File(handle, name=source.name))
    if saved != name:
        raise BackupError(f"The target storage stored {name} as {saved}.")


def storage_sha256(storage: Storage, name: str) -> tuple[str, int]:
    """Read a stored file back and hash it."""
    digest, size = hashlib.sha256(), 0
    with storage.open(name, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size
