"""gunicorn's configuration (`--config python:portal.gunicorn`): web workers give memory back.

A Python process rarely returns freed memory to the system, so a worker that once decoded a large film
keeps that peak. Two limits replace a worker, each after the request it is serving has been answered:

- `--max-requests` (GUNICORN_MAX_REQUESTS, with GUNICORN_MAX_REQUESTS_JITTER so the workers do not all
  restart at once), given on the command line in docker-compose.yml and deploy/systemd;
- GUNICORN_MAX_WORKER_RSS_MB here: a worker whose resident memory is above it after a request exits
  gracefully and the arbiter starts a fresh one (0 turns the check off).
"""

from __future__ import annotations

import os
from typing import Any

from portal.settings.env import env_int

MAX_WORKER_RSS_MB = env_int("GUNICORN_MAX_WORKER_RSS_MB", 512)


def resident_mb(pid: int | None = None) -> float:
    """The process's resident set size in MB (Linux /proc; 0 where it cannot be read)."""
    try:
        with open(f"/proc/{pid or os.getpid()}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    if MAX_WORKER_RSS_MB and (rss := resident_mb()) > MAX_WORKER_RSS_MB:
        worker.log.warning(
            "Worker %s holds %.0f MB (over GUNICORN_MAX_WORKER_RSS_MB=%s): replaced after this request.",
            worker.pid,
            rss,
            MAX_WORKER_RSS_MB,
        )
        worker.alive = False  # the sync worker's loop ends; the arbiter forks a fresh worker
