"""Counters of events no row records (an upload refused with 413, 429, 503 or 507), shared by every process.

Kept in Redis (HINCRBY on one hash per counter) when a broker is configured, so that every gunicorn worker
on every host adds to the same numbers and /metrics reads them from any of them; in the embedded mode
(one process, no Redis) in that process. A counter that cannot be written is logged, never raised: a
refused upload's answer does not depend on it.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

KEY_PREFIX = "portal:counters:"
# Uploads refused, by HTTP status (diagnostics/operations_endpoints.py counts them, /metrics reads them).
UPLOAD_REFUSALS = "upload_refusals"
_local: dict[str, Counter[str]] = {}
_local_lock = threading.Lock()
_clients: dict[str, redis.Redis] = {}


def _redis() -> redis.Redis | None:
    url = settings.CELERY_BROKER_URL
    if not url or not url.startswith(("redis://", "rediss://")):
        return None
    if url not in _clients:  # one connection pool per process and broker
        _clients[url] = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    return _clients[url]


def counter_increment(*, name: str, label: str, amount: int = 1) -> None:
    client = _redis()
    if client is None:
        with _local_lock:
            _local.setdefault(name, Counter())[label] += amount
        return
    try:
        client.hincrby(KEY_PREFIX + name, label, amount)
    except (redis.RedisError, OSError) as error:
        logger.warning("Counter %s{%s} not incremented: %s", name, label, type(error).__name__)


def counter_read(*, name: str) -> dict[str, int]:
    client = _redis()
    if client is None:
        with _local_lock:
            return dict(_local.get(name, Counter()))
    return {
        (label.decode() if isinstance(label, bytes) else label): int(value)
        for label, value in client.hgetall(KEY_PREFIX + name).items()
    }
