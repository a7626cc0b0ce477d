"""Test settings: real PostgreSQL and Redis on 127.0.0.1, as .ci/run provides them.

The Celery worker the end-to-end tests start reads the same variables, so it
talks to the same test database and broker.
"""

import os
from pathlib import Path

# Several test runs may share one machine (developers, CI): each process gets its own test
# database and Redis database, so one run's set-up never drops or purges another's.
_RUN = os.getpid()
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/portal")
os.environ.setdefault("CELERY_BROKER_URL", f"redis://127.0.0.1:6379/{2 + _RUN % 14}")
os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production-use-0123456789")

from .base import *  # noqa: E402,F403
from .env import env_str  # noqa: E402

MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "test-media")))  # noqa: F405
DATABASES["default"]["TEST"] = {"NAME": env_str("TEST_DATABASE_NAME", f"test_portal_{_RUN}")}  # noqa: F405

# Argon2 at full cost makes every test login slow; tests check roles, not hash strength.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
SECURE_SSL_REDIRECT = False
# The webhook tests run their receiver on this machine; his.example stands for a hospital system.
WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1", "localhost", "his.example"]
SECURE_HSTS_SECONDS = 0
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
