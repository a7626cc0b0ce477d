"""Test settings: real PostgreSQL and Redis on 127.0.0.1, as .ci/run provides them.

The Celery worker the end-to-end tests start reads the same variables, so it
talks to the same test database and broker.
"""

import os
from pathlib import Path
from typing import Any

# Several test runs may share one machine (developers, CI): each process gets its own test
# database and Redis database, so one run's set-up never drops or purges another's, and one run's
# workers never take another's tasks. The Celery workers a run starts inherit both through the
# environment (setdefault: they never claim their own).
_RUN = os.getpid()
REDIS_OWNER_KEY = "portal-test-run-owner"


def _claim_redis_db() -> int:
    """A Redis database (2-15) no other live test run holds: pid % 14 alone let two runs share one
    (1 chance in 14), and a run's queue purge then emptied the other's queues mid-test."""
    import atexit

    import redis

    first = 2 + _RUN % 14
    try:
        for offset in range(14):
            db = 2 + (first - 2 + offset) % 14
            client = redis.Redis(host="127.0.0.1", port=6379, db=db, socket_connect_timeout=2)
            owner = client.get(REDIS_OWNER_KEY)
            if owner is not None and _alive(int(owner)):
                continue
            if owner is not None:
                client.delete(REDIS_OWNER_KEY)  # its run has ended without letting go
            if client.set(REDIS_OWNER_KEY, _RUN, nx=True):
                atexit.register(_release_redis_db, client)
                return db
    except (redis.RedisError, ValueError):
        pass  # Redis down: the tests that need it say so; keep the old choice
    return first


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _release_redis_db(client: Any) -> None:
    try:
        if client.get(REDIS_OWNER_KEY) == str(_RUN).encode():
            client.delete(REDIS_OWNER_KEY)
    except Exception:  # noqa: S110 - best effort at interpreter exit
        pass


os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/portal")
if "CELERY_BROKER_URL" not in os.environ:
    os.environ["CELERY_BROKER_URL"] = f"redis://127.0.0.1:6379/{_claim_redis_db()}"
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
# Tests store many studies that no worker assesses (factories, pages): the AI backlog limit would refuse
# them. The tests of the limit set it themselves.
INFERENCE_BACKLOG_LIMIT = 0
STORAGES = storages_from_env()  # noqa: F405 - the file system unless STORAGE_BACKEND says otherwise
