"""Where films, derivatives, heatmaps and model artifacts live: the file system (the embedded default) or
S3-compatible object storage, chosen by STORAGE_BACKEND (docs/operations.md, "Object storage").

With ``STORAGE_BACKEND=s3`` the ``default`` storage (everything a FileField holds: films, their derivatives,
heatmaps) is the bucket under ``S3_MEDIA_PREFIX`` and a ``models`` storage holds model artifacts under
``S3_MODELS_PREFIX``. The bucket stays private: objects are written without an ACL, read with the
portal's credentials and served only through the access-checked views; no URL to an object is ever made.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured

from .env import env_str

STATICFILES = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}


def storages_from_env() -> dict[str, Any]:
    backend = env_str("STORAGE_BACKEND", "filesystem").strip().lower()
    if backend == "filesystem":
        # Uploads and heatmaps: a failed write (disk full) leaves no partial file (diagnostics/storage.py).
        return {"default": {"BACKEND": "diagnostics.storage.UploadStorage"}, "staticfiles": STATICFILES}
    if backend != "s3":
        raise ImproperlyConfigured(f"STORAGE_BACKEND must be filesystem or s3, not {backend!r}.")
    bucket = env_str("S3_BUCKET")
    if not bucket:
        raise ImproperlyConfigured("STORAGE_BACKEND=s3 needs S3_BUCKET.")
    common = {
        "bucket_name": bucket,
        "endpoint_url": env_str("S3_ENDPOINT_URL") or None,
        "region_name": env_str("S3_REGION") or None,
        # Unset: boto3's own chain (environment, instance profile, ~/.aws).
        "access_key": env_str("S3_ACCESS_KEY_ID") or None,
        "secret_key": env_str("S3_SECRET_ACCESS_KEY") or None,
        "addressing_style": env_str("S3_ADDRESSING_STYLE", "path"),
        "signature_version": "s3v4",
        # Names are random and a name is never written twice (django-storages' default overwrites).
        "file_overwrite": False,
        "default_acl": None,
    }
    return {
        "default": {
            "BACKEND": "diagnostics.object_storage.ObjectStorage",
            "OPTIONS": {**common, "location": env_str("S3_MEDIA_PREFIX", "media")},
        },
        "models": {
            "BACKEND": "diagnostics.object_storage.ObjectStorage",
            "OPTIONS": {**common, "location": env_str("S3_MODELS_PREFIX", "models")},
        },
        "staticfiles": STATICFILES,
    }
