"""Is this portal ready to serve? The checks behind /readyz and `manage.py worker_health`.

Each check answers only ok or not ok with the milliseconds it took: the reason goes to the log, never
to the caller (the endpoints are unauthenticated). The checks are cheap: one `SELECT 1`, one Redis PING,
one look at the storage, and the active model's artifact, whose check (a sha256 of the model file or a
HEAD on object storage) is remembered for READYZ_MODEL_CHECK_SECONDS.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from django.conf import settings
from django.core.files.storage import FileSystemStorage, default_storage
from django.db import connection

from diagnostics.services.model_artifacts import model_artifact_check
from worker.heartbeat import heartbeats_read
from worker.queues import INFERENCE

from .model_versions import model_version_active

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    ms: float
    # Only what a check may say in public: "not_configured" (embedded mode has no Redis) or a count.
    note: str = ""


def _timed(name: str, probe: Callable[[], object]) -> Check:
    started = time.perf_counter()
    try:
        result = probe()
    except Exception as error:  # noqa: BLE001 - a failed check is a "fail", its reason goes to the log only
        logger.warning("Readiness check %s failed: %s: %s", name, type(error).__name__, error)
        return Check(name, False, _ms(started))
    ok = result is not False
    if not ok:
        logger.warning("Readiness check %s failed", name)
    return Check(name, ok, _ms(started), note=result if isinstance(result, str) else "")


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _database() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        return cursor.fetchone() == (1,)


def broker_client(*, timeout: float = 2.0) -> redis.Redis | None:
    """A Redis client on the broker, or None in the embedded mode (tasks run in process)."""
    url = settings.CELERY_BROKER_URL
    if not url or not url.startswith(("redis://", "rediss://")):
        return None
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


def _redis() -> bool | str:
    client = broker_client()
    if client is None:
        return "not_configured"
    try:
        return bool(client.ping())
    finally:
        client.close()


def _storage() -> bool:
    if isinstance(default_storage, FileSystemStorage):  # the lazy object passes isinstance as what it wraps
        root = Path(default_storage.location)
        while not root.exists() and root != root.parent:  # created on the first save
            root = root.parent
        return root.is_dir() and os.access(root, os.W_OK)
    # Object storage: one authenticated HEAD on the bucket (its existence and the credentials).
    default_storage.connection.meta.client.head_bucket(Bucket=default_storage.bucket_name)  # type: ignore[attr-defined]
    return True


_model_lock = threading.Lock()
_model_cache: dict[str, Any] = {"at": float("-inf"), "key": None, "ok": False}


def _active_model() -> bool | str:
    active = model_version_active()
    if active is None:
        return False
    key = (active.pk, active.sha256)
    now = time.monotonic()
    with _model_lock:
        if _model_cache["key"] == key and now - _model_cache["at"] < settings.READYZ_MODEL_CHECK_SECONDS:
            return bool(_model_cache["ok"])
    ok = model_artifact_check(model_version=active)
    with _model_lock:
        _model_cache.update(at=now, key=key, ok=ok)
    return ok


def readiness_checks() -> list[Check]:
    """Database, Redis, storage and the active model, each with its time in ms."""
    return [
        _timed("database", _database),
        _timed("redis", _redis),
        _timed("storage", _storage),
        _timed("model", _active_model),
    ]


def workers_seen(*, within_seconds: float, queue: str | None = None, now: float | None = None) -> dict[str, float]:
    """Workers ("celery@host/queues" -> seconds since their last heartbeat) seen within `within_seconds`,
    optionally only those consuming `queue`. Empty in the embedded mode (no broker, no workers)."""
    client = broker_client()
    if client is None:
        return {}
    try:
        beats = heartbeats_read(client)
    finally:
        client.close()
    now = time.time() if now is None else now
    seen = {}
    for node, beat in beats.items():
        age = now - float(beat.get("at", 0))
        if age <= within_seconds and (queue is None or queue in beat.get("queues", [])):
            seen[node] = round(age, 1)
    return seen


def worker_heartbeats() -> dict[str, dict[str, Any]]:
    """Every worker's last heartbeat as stored (for /metrics); empty in the embedded mode."""
    client = broker_client()
    if client is None:
        return {}
    try:
        return heartbeats_read(client)
    finally:
        client.close()


def inference_workers_check() -> Check:
    """How many inference workers were heard from within WORKER_HEARTBEAT_STALE_SECONDS (a count, no names)."""
    started = time.perf_counter()
    try:
        count = len(workers_seen(within_seconds=settings.WORKER_HEARTBEAT_STALE_SECONDS, queue=INFERENCE))
    except (redis.RedisError, OSError) as error:
        logger.warning("Worker heartbeats unreadable: %s", type(error).__name__)
        return Check("inference_workers", False, _ms(started))
    return Check("inference_workers", count > 0 or not settings.CELERY_BROKER_URL, _ms(started), note=str(count))
