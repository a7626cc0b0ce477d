"""S3-compatible object storage for films, heatmaps and model artifacts (STORAGE_BACKEND=s3).

Imported only when configured (portal/settings/storage.py names it), so the embedded default needs
neither django-storages nor boto3 at run time.
"""

from __future__ import annotations

from typing import Any

from storages.backends.s3 import S3Storage


class ObjectStorage(S3Storage):
    """S3 storage that never hands out a URL to an object: films, heatmaps and models are read with the
    portal's credentials and reach a person only through the access-checked views, as with the file system
    (MEDIA_URL = None). A failed upload leaves no object (an S3 PUT or multipart upload is all or nothing)."""

    def url(self, name: str, parameters: Any = None, expire: Any = None, http_method: Any = None) -> str:
        raise ValueError("This file is not accessible via a URL.")
