"""Exit 0 when a Celery worker was heard from lately (its heartbeat in Redis, worker/heartbeat.py), else 1.

The health check of a worker container or unit: `manage.py worker_health --node celery@$(hostname)` for
this worker, `--queue inference` for "some inference worker, on any host".
"""

from __future__ import annotations

import socket
import sys
import time
from typing import Any

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from diagnostics.selectors.health import workers_seen


class Command(BaseCommand):
    help = "Exit 0 if a worker (by node name or queue) sent a heartbeat within --within seconds, else 1."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--node", help="the worker's node name (celery@host); default: any worker")
        parser.add_argument("--this-host", action="store_true", help="a worker whose node name ends in @<this host>")
        parser.add_argument("--queue", help="only workers consuming this queue")
        parser.add_argument(
            "--within", type=float, default=None, help="seconds (default WORKER_HEARTBEAT_STALE_SECONDS)"
        )
        parser.add_argument("--wait", type=float, default=0, help="keep looking this many seconds (a unit's start)")

    def handle(self, *args: Any, node: str | None, this_host: bool, queue: str | None, within: float | None,
               wait: float, **options: Any) -> None:  # fmt: skip
        if not settings.CELERY_BROKER_URL:
            raise CommandError("No broker is configured (embedded mode): tasks run in process, there are no workers.")
        within = settings.WORKER_HEARTBEAT_STALE_SECONDS if within is None else within
        deadline = time.monotonic() + wait
        while True:
            matching = self._matching(node=node, this_host=this_host, queue=queue, within=within)
            if matching or time.monotonic() >= deadline:
                break
            time.sleep(1)
        if not matching:
            self.stderr.write(f"No worker{' ' + node if node else ''} heard from within {within:g} s.")
            sys.exit(1)
        for name, age in sorted(matching.items()):
            self.stdout.write(f"{name}: last heartbeat {age:g} s ago")

    def _matching(self, *, node: str | None, this_host: bool, queue: str | None, within: float) -> dict[str, float]:
        try:
            seen = workers_seen(within_seconds=within, queue=queue)
        except (redis.RedisError, OSError) as error:
            self.stderr.write(f"Cannot read the worker heartbeats: {type(error).__name__}")
            return {}
        host = socket.gethostname()
        return {
            name: age
            for name, age in seen.items()
            if (node is None or name.split("/", 1)[0] == node)
            and (not this_host or name.split("/", 1)[0].endswith(f"@{host}"))
        }
