"""Files in the media storage (MEDIA_ROOT, or the bucket) that no row refers to, removed after a grace period.

An upload's file is written inside the study's transaction (services.images.image_store), and every
failure the code can see removes it again. What it cannot see is a process killed between writing the
file and committing the row (`kill -9` of a web worker mid-upload, a machine losing power): the row
never exists and the file would stay, a patient's film with no record. Beat runs this sweep hourly
(worker.tasks.sweep_orphan_files); a file younger than ORPHAN_FILE_GRACE_SECONDS is never touched, as
its upload may still be committing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.core.files.storage import FileSystemStorage, default_storage

from diagnostics.models import Image, Prediction

from .audit import audit_record

logger = logging.getLogger(__name__)

# The folders the portal writes patient files into (models.py: _image_upload_path, _derivative_upload_path,
# _heatmap_upload_path).
SWEPT_FOLDERS = ("studies", "derivatives", "heatmaps")


def media_sweep_orphans(*, grace_seconds: float | None = None) -> dict[str, int]:
    """Remove files older than the grace period that no Image or Prediction refers to."""
    grace = settings.ORPHAN_FILE_GRACE_SECONDS if grace_seconds is None else grace_seconds
    cutoff = time.time() - grace
    candidates = [name for folder in SWEPT_FOLDERS for name, modified in _listing(folder) if modified < cutoff]
    counts = {"checked": len(candidates), "removed": 0}
    if not candidates:
        return counts
    # Read after listing: a row committed meanwhile is seen, so its file is kept.
    referenced = {name for names in Image.objects.values_list("file", "preview", "window_source") for name in names}
    referenced |= set(Prediction.objects.exclude(heatmap="").values_list("heatmap", flat=True))
    for name in candidates:
        if name not in referenced:
            default_storage.delete(name)
            counts["removed"] += 1
    if counts["removed"]:
        # File names are random (no patient data); the count and the folder are what an operator needs.
        where = settings.MEDIA_ROOT if isinstance(default_storage, FileSystemStorage) else "object storage"
        audit_record(action="storage.orphans_removed", detail={**counts, "grace_seconds": grace})
        logger.warning("Removed %s files with no row (older than %s s) from %s", counts["removed"], grace, where)
    return counts


def _listing(folder: str) -> Iterator[tuple[str, float]]:
    """The files directly in `folder` of the media storage, as (storage name, modified at, epoch seconds)."""
    if isinstance(default_storage, FileSystemStorage):
        root = Path(settings.MEDIA_ROOT)
        if (root / folder).is_dir():
            for path in (root / folder).iterdir():
                if path.is_file():
                    yield path.relative_to(root).as_posix(), path.stat().st_mtime
        return
    # Object storage: one listing request per 1,000 objects gives names and times (no HEAD per object).
    location = default_storage.location.strip("/")  # type: ignore[attr-defined]
    prefix = f"{location}/{folder}/" if location else f"{folder}/"
    for summary in default_storage.bucket.objects.filter(Prefix=prefix):  # type: ignore[attr-defined]
        relative = summary.key[len(prefix) :]
        if relative and "/" not in relative:
            yield f"{folder}/{relative}", summary.last_modified.timestamp()
