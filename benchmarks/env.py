"""The benchmark's own environment: database, Redis database, media folder and processes.

Every process runs on 127.0.0.1 with settings from the environment (as in production):
a `portal_bench` PostgreSQL database with migrations applied, Redis database 1 (not the
tests' 2-15 nor a developer's 0), and var/bench/media for uploads.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORKDIR = ROOT / "var" / "bench"
LOG_DIR = WORKDIR / "logs"
PG_SERVER = os.environ.get("BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432")
DATABASE_NAME = os.environ.get("BENCH_DATABASE_NAME", "portal_bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/1")
HOST = "127.0.0.1"  # never any other address


def bench_env(**overrides: str) -> dict[str, str]:
    """Environment for every portal process of the benchmark (web, worker, seeding)."""
    env = dict(os.environ)
    for name in ("DJANGO_SETTINGS_MODULE", "TEST_DATABASE_NAME"):
        env.pop(name, None)
    env.update(
        DJANGO_SETTINGS_MODULE="portal.settings.base",
        DATABASE_URL=f"{PG_SERVER}/{DATABASE_NAME}",
        CELERY_BROKER_URL=REDIS_URL,
        SECRET_KEY=_secret_key(),
        ALLOWED_HOSTS=HOST,
        SECURE_SSL_REDIRECT="0",
        SECURE_COOKIES="0",
        SECURE_HSTS_SECONDS="0",
        # The load test measures the portal, not the rate limiter.
        API_THROTTLE_CLIENT="100000000/minute",
        API_THROTTLE_ANONYMOUS="100000000/minute",
        MEDIA_ROOT=str(WORKDIR / "media"),
        PORTAL_VAR_DIR=str(WORKDIR / "var"),
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


def _secret_key() -> str:
    key_file = WORKDIR / "secret_key"
    if not key_file.exists():
        WORKDIR.mkdir(parents=True, exist_ok=True)
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


def database_reset(name: str = DATABASE_NAME) -> None:
    """Drop and re-create a benchmark database, `name` (never any other)."""
    import psycopg2

    assert name.startswith("portal_bench"), name
    connection = psycopg2.connect(f"{PG_SERVER}/postgres")
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{name}"')
    connection.close()


def database_connect():  # a psycopg2 connection (psycopg2 has no type hints)
    import psycopg2

    connection = psycopg2.connect(f"{PG_SERVER}/{DATABASE_NAME}")
    connection.autocommit = True
    return connection


def seeded_database(*, film: Path, studies: int, patients: int, env: dict[str, str]) -> dict[str, Any]:
    """This benchmark's database, dropped, migrated and seeded (benchmarks.seed: a care team, `patients`
    patients, `studies` finished studies pointing at `film`, an API token); returns the credentials."""
    database_reset()
    manage("migrate", "--noinput", env=env)
    credentials = WORKDIR / f"{DATABASE_NAME}-credentials.json"
    subprocess.run(  # noqa: S603 - our interpreter and module
        [sys.executable, "-m", "benchmarks.seed", "--studies", str(studies), "--patients", str(patients),
         "--film", str(film), "--out", str(credentials)],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    found: dict[str, Any] = json.loads(credentials.read_text())
    return found


def redis_flush() -> None:
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


def manage(*args: str, env: dict[str, str] | None = None) -> str:
    completed = subprocess.run(  # noqa: S603 - our interpreter and manage.py
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env or bench_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{completed.stderr[-3000:]}")
    return completed.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Service:
    """A subprocess this benchmark started (and alone stops, by its own process group)."""

    def __init__(self, name: str, command: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{name}.log"

    def start(self) -> Service:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(  # noqa: S603 - fixed commands
            self.command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, marker: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if marker in self.log_text():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.log_text()[-3000:]}")

    def wait_for_http(self, url: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - 127.0.0.1
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{self.name} not answering {url} after {timeout}s:\n{self.log_text()[-3000:]}")

    def child_pids(self) -> list[int]:
        """The processes this service's main process started (gunicorn's workers, a Celery pool)."""
        if self.process is None:
            return []
        children = []
        for entry in Path("/proc").iterdir():
            try:
                stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
            except OSError:
                continue
            if stat and int(stat[stat.rindex(")") + 2 :].split()[1]) == self.process.pid:
                children.append(int(entry.name))
        return children

    def _check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # the group this Service started, nothing else
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def gunicorn(port: int, *, workers: int = 3, env: dict[str, str] | None = None) -> Service:
    """The web process as docker-compose.yml runs it (3 sync workers), on 127.0.0.1 only."""
    command = [
        sys.executable, "-m", "gunicorn", "portal.wsgi:application",
        "--bind", f"{HOST}:{port}", "--workers", str(workers), "--backlog", "512", "--timeout", "60",
    ]  # fmt: skip
    return Service("gunicorn", command, env or bench_env())


# docker-compose.yml's worker-inference: prefork processes, and ONNX Runtime threads in each.
COMPOSE_INFERENCE_PROCESSES = 2
COMPOSE_INFERENCE_THREADS = 2


def celery_worker(*, concurrency: int | None = None, env: dict[str, str] | None = None) -> Service:
    """The inference worker as docker-compose.yml runs it (prefork, 2 processes), each process with
    two ONNX Runtime threads: a lone upload uses both cores; two busy processes oversubscribe them
    (spinning is off, so the cost is small). BENCH_INFERENCE_THREADS and BENCH_INFERENCE_CONCURRENCY
    compare other layouts."""
    env = dict(env or bench_env())
    env.setdefault("INFERENCE_THREADS", os.environ.get("BENCH_INFERENCE_THREADS", str(COMPOSE_INFERENCE_THREADS)))
    if concurrency is None:  # BENCH_INFERENCE_CONCURRENCY: to compare worker layouts (processes x threads)
        concurrency = int(os.environ.get("BENCH_INFERENCE_CONCURRENCY", str(COMPOSE_INFERENCE_PROCESSES)))
    command = [
        sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", "inference",
        "--concurrency", str(concurrency), "-n", f"bench-{os.getpid()}@%h", "-l", "info",
    ]  # fmt: skip
    return Service("celery-worker", command, env)
