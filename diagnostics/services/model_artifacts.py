"""Where a worker finds a model's files: the folder it was registered from, or object storage.

With the embedded default (file system storage) a model is served from the folder it was registered
from (`ModelVersion.artifact_path`), as always. With object storage (STORAGE_BACKEND=s3) the registry
copies every file of the artifact to the ``models`` storage under ``<sha256 of model.onnx>/`` when it is
registered, and a worker on any host serves it from its own cache, ``MODEL_CACHE_DIR/<sha256>/``,
downloaded once and checked against the sha256 the registry recorded: no worker assumes a path that
another process wrote.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import Storage, storages

from diagnostics.models import ModelVersion
from ml.serving.artifacts import ONNX_NAME, read_manifest, sha256_file
from ml.serving.inference import ModelArtifactError

logger = logging.getLogger(__name__)

MODEL_STORAGE = "models"
# Written last into a cache folder: a folder without it is a download that did not finish.
COMPLETE_MARK = ".complete"
_fetch_lock = threading.Lock()
# (path, size, mtime_ns) -> sha256: a model file is hashed again only when it changes.
_local_sha256: dict[tuple[str, int, int], str] = {}


def model_artifacts_in_storage() -> bool:
    """Whether model artifacts live in object storage (STORAGES has a "models" entry)."""
    return MODEL_STORAGE in settings.STORAGES


def model_storage() -> Storage:
    return storages[MODEL_STORAGE]


def model_artifact_publish(*, artifact_dir: Path, sha256: str) -> int:
    """Copy the artifact's files to the models storage under `sha256`/ (object storage only); returns the
    number of files copied. Files already there under the same name are kept (the name holds the sha256)."""
    if not model_artifacts_in_storage():
        return 0
    storage = model_storage()
    copied = 0
    for path in sorted(p for p in Path(artifact_dir).rglob("*") if p.is_file()):
        name = f"{sha256}/{path.relative_to(artifact_dir).as_posix()}"
        if storage.exists(name):
            continue
        with path.open("rb") as handle:
            saved = storage.save(name, File(handle, name=path.name))
        if saved != name:
            raise ModelArtifactError(f"The model storage renamed {name} to {saved}.")
        copied += 1
    logger.info("Published model artifact %s: %s files copied to object storage", sha256[:12], copied)
    return copied


def model_artifact_local_dir(model_version: ModelVersion) -> Path:
    """A folder on this host holding the model's files, checked against the registered sha256."""
    if not model_artifacts_in_storage():
        return Path(model_version.artifact_path)
    folder = Path(settings.MODEL_CACHE_DIR) / model_version.sha256
    if (folder / COMPLETE_MARK).is_file():
        return folder
    with _fetch_lock:
        if not (folder / COMPLETE_MARK).is_file():
            _fetch(model_version, folder)
    return folder


def _fetch(model_version: ModelVersion, folder: Path) -> None:
    storage = model_storage()
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Downloaded beside its final place, then renamed: another process on this host never sees half of it.
    staging = Path(tempfile.mkdtemp(prefix=f".{model_version.sha256[:12]}-", dir=folder.parent))
    try:
        names = _list_files(storage, f"{model_version.sha256}/")
        if not names:
            raise ModelArtifactError(f"The model {model_version.name} is not in the model storage.")
        for name in names:
            target = staging / name.split("/", 1)[1]
            target.parent.mkdir(parents=True, exist_ok=True)
            with storage.open(name, "rb") as source, target.open("wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
        onnx = staging / str(read_manifest(staging)["files"].get("onnx") or ONNX_NAME)
        if sha256_file(onnx) != model_version.sha256:
            raise ModelArtifactError(f"The stored files of {model_version.name} do not match its sha256.")
        (staging / COMPLETE_MARK).write_text(model_version.name)
        try:
            os.rename(staging, folder)
        except OSError:
            if not (folder / COMPLETE_MARK).is_file():  # not another process's complete copy: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("Model %s fetched from object storage into %s", model_version.name, folder)


def _list_files(storage: Storage, prefix: str) -> list[str]:
    directories, files = storage.listdir(prefix)
    names = [f"{prefix}{name}" for name in files]
    for directory in directories:
        names += _list_files(storage, f"{prefix}{directory}/")
    return names


def model_artifact_check(*, model_version: ModelVersion) -> bool:
    """Can a worker load this model? Object storage: its manifest and model file are there (the sha256 is
    checked where it is downloaded). File system: the manifest reads, the model file's sha256 is the registered one."""
    try:
        onnx_name = str(model_version.manifest.get("files", {}).get("onnx") or ONNX_NAME)
        if model_artifacts_in_storage():
            storage = model_storage()
            return storage.exists(f"{model_version.sha256}/manifest.json") and storage.exists(
                f"{model_version.sha256}/{onnx_name}"
            )
        folder = Path(model_version.artifact_path)
        read_manifest(folder)
        onnx = folder / onnx_name
        stat = onnx.stat()
        key = (str(onnx), stat.st_size, stat.st_mtime_ns)
        if key not in _local_sha256:
            _local_sha256[key] = sha256_file(onnx)
        return _local_sha256[key] == model_version.sha256
    except (OSError, ValueError, KeyError, AttributeError) as error:
        logger.warning("Model %s cannot be loaded: %s", model_version.name, error)
        return False
