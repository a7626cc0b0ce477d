"""Files under MEDIA_ROOT that no row refers to, removed after a grace period.

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
from pathlib import Path

from django.conf import settings

from diagnostics.models import Image, Prediction

from .audit import audit_record

logger = logging.getLogger(__name__)

# The folders the portal writes patient files into (models.py: _image_upload_path, _derivative_upload_path,
# _heatmap_upload_path).
SWEPT_FOLDERS = ("studies", "derivatives", "heatmaps")


def media_sweep_orphans(*, grace_seconds: float | None = None) -> dict[str, int]:
    """Remove files older than the grace period that no Image or Prediction refers to."""
    grace = settings.ORPHAN_FILE_GRACE_SECONDS if grace_seconds is None else grace_seconds
    root = Path(settings.MEDIA_ROOT)
    cutoff = time.time() - grace
    candidates = [
        path
        for folder in SWEPT_FOLDERS
        if (root / folder).is_dir()
        for path in (root / folder).iterdir()
        if path.is_file() and path.stat().st_mtime < cutoff
    ]
    counts = {"checked": len(candidates), "removed": 0}
    if not candidates:
        return counts
    # Read after listing: a row committed meanwhile is seen, so its file is kept.
    referenced = {name for names in Image.objects.values_list("file", "preview", "window_source") for name in names}
    referenced |= set(Prediction.objects.exclude(heatmap="").values_list("heatmap", flat=True))
    for path in candidates:
        if path.relative_to(root).as_posix() not in referenced:
            path.unlink(missing_ok=True)
            counts["removed"] += 1
    if counts["removed"]:
        # File names are random (no patient data); the count and the folder are what an operator needs.
        audit_record(action="storage.orphans_removed", detail={**counts, "grace_seconds": grace})
        logger.warning("Removed %s files with no row (older than %s s) from %s", counts["removed"], grace, root)
    return counts
