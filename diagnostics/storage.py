"""Where uploads and heatmaps are written: the file system, leaving nothing half-written behind, or
S3-compatible object storage (diagnostics/object_storage.py; portal/settings/storage.py chooses)."""

from __future__ import annotations

import contextlib
import os
from typing import Any

from django.core.files.storage import FileSystemStorage


class UploadStorage(FileSystemStorage):
    """FileSystemStorage that removes the file it was writing when the write fails (disk full,
    storage gone read-only): Django's own leaves an empty or truncated file that no row names."""

    def _save(self, name: str, content: Any) -> str:
        try:
            return super()._save(name, content)  # type: ignore[misc]  # private in the stubs, documented for subclasses
        except OSError:
            # `name` was free when the save began (Storage.save picked it): this partial file is ours.
            with contextlib.suppress(OSError):
                os.remove(self.path(name))
            raise
