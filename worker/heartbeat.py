"""Each Celery worker says it is alive: a heartbeat in Redis, written from the worker's own event loop.

A bootstep (``HeartbeatStep``) registers a repeating call on the worker's timer, the one that drives its
consumer: if the worker hangs, its heartbeats stop too, not only when its process dies. Every
``WORKER_HEARTBEAT_SECONDS`` it writes one field of a Redis hash (``HEARTBEATS_KEY``), named by the
worker's node name and queues (``celery@host/inference``), holding the time and the queues it consumes.
Redis is the broker every worker already reaches from any host, so the web's /readyz,
``manage.py worker_health`` and /metrics read the heartbeats of workers on other machines without a
shared file system.

The reader lives in diagnostics (selectors/health.py); this module imports nothing from it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import redis
from celery import bootsteps

logger = logging.getLogger(__name__)

HEARTBEATS_KEY = "portal:worker-heartbeats"
# A worker not heard from for a day is forgotten (its field removed by the next beat of any worker).
FORGET_AFTER_SECONDS = 24 * 3600


def heartbeat_interval() -> float:
    return float(os.environ.get("WORKER_HEARTBEAT_SECONDS", "10"))


def heartbeat_write(client: Any, *, node: str, queues: list[str], now: float | None = None) -> None:
    """Record that `node` (consuming `queues`) is alive now, and forget workers silent for a day."""
    now = time.time() if now is None else now
    beat = {"node": node, "at": now, "queues": sorted(queues), "pid": os.getpid()}
    client.hset(HEARTBEATS_KEY, heartbeat_field(node, queues), json.dumps(beat))
    stale = [
        name
        for name, raw in client.hgetall(HEARTBEATS_KEY).items()
        if now - float(json.loads(raw).get("at", 0)) > FORGET_AFTER_SECONDS
    ]
    if stale:
        client.hdel(HEARTBEATS_KEY, *stale)


def heartbeat_field(node: str, queues: list[str]) -> str:
    """One field per worker: its node name and queues, since workers started without -n on one host share
    the node name celery@host (the inference, maintenance and training units of one machine)."""
    return f"{node}/{'+'.join(sorted(queues))}"


def heartbeats_read(client: Any) -> dict[str, dict[str, Any]]:
    """Every worker's last heartbeat: {"celery@host/inference": {"node", "at" (epoch s), "queues", "pid"}}."""
    beats = {}
    for name, raw in client.hgetall(HEARTBEATS_KEY).items():
        try:
            beats[name.decode() if isinstance(name, bytes) else name] = json.loads(raw)
        except ValueError:
            continue
    return beats


class HeartbeatStep(bootsteps.StartStopStep):
    """Worker bootstep: a heartbeat on the worker's timer while the worker runs."""

    requires = ("celery.worker.components:Timer",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.entry: Any = None
        self.client: Any = None
        self.field = ""

    def start(self, worker: Any) -> None:
        broker_url = worker.app.conf.broker_url
        if not broker_url or not broker_url.startswith(("redis://", "rediss://")):
            return
        self.client = redis.Redis.from_url(broker_url, socket_timeout=2, socket_connect_timeout=2)
        queues = list(worker.app.amqp.queues.consume_from or worker.app.amqp.queues)
        node = worker.hostname
        self.field = heartbeat_field(node, queues)

        def beat() -> None:
            try:
                heartbeat_write(self.client, node=node, queues=queues)
            except (redis.RedisError, OSError) as error:  # Redis away: the next beat tries again
                logger.warning("Worker heartbeat not written: %s", type(error).__name__)

        beat()
        self.entry = worker.timer.call_repeatedly(heartbeat_interval(), beat)

    def stop(self, worker: Any) -> None:
        if self.entry is not None:
            self.entry.cancel()
            self.entry = None
        if self.client is not None:
            try:  # a worker stopped on purpose is gone at once, not stale later
                self.client.hdel(HEARTBEATS_KEY, self.field)
            except (redis.RedisError, OSError):
                pass
