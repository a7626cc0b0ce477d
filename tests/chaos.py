"""Tools for fault tests: a private Redis server the test may restart, and pointing Celery at it."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateRedis:
    """A redis-server on 127.0.0.1 that belongs to one test, so restarting it disturbs nobody else."""

    def __init__(self, directory: Path, *, persistent: bool) -> None:
        self.directory = directory
        self.persistent = persistent
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        subprocess.run(
            [
                "redis-server",
                "--daemonize",
                "yes",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--dir",
                str(self.directory),
                "--logfile",
                str(self.directory / "redis.log"),
                *persistence,
            ],
            check=True,
        )
        client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"private Redis on port {self.port} did not start")

    def stop(self) -> None:
        try:
            redis.Redis(port=self.port).shutdown(nosave=True)
        except redis.ConnectionError:
            pass  # shutting down closes the connection; that is the expected answer

    def restart(self) -> None:
        self.stop()
        time.sleep(0.2)
        self.start()

    def queued_messages(self, queue: str = "inference") -> int:
        return int(redis.Redis(port=self.port).llen(queue))


@contextmanager
def celery_broker(url: str) -> Iterator[None]:
    """Send this process's Celery messages to `url` for the duration (the app caches its pools)."""
    from worker.celery_app import app

    previous = app.conf.broker_write_url
    try:
        _switch(app, url)
        yield
    finally:
        _switch(app, previous)


def _switch(app, url: str) -> None:  # type: ignore[no-untyped-def]
    app.conf.broker_write_url = url  # what producers use (broker_url is read through the Django namespace)
    app._pool = None
    app.amqp._producer_pool = None


def terminate_backend(pid: int) -> None:
    """Cut one PostgreSQL session from outside, as a restart or a failover does (pg_terminate_backend)."""
    import psycopg2
    from django.conf import settings

    params = settings.DATABASES["default"]
    outside = psycopg2.connect(
        dbname=params["NAME"], user=params["USER"], host=params["HOST"], port=params["PORT"] or 5432
    )
    try:
        outside.autocommit = True
        with outside.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
            assert cursor.fetchone()[0], f"no session {pid} to terminate"
    finally:
        outside.close()


def cut_this_connection() -> None:
    """Terminate this thread's own database session: its next query fails as on a cut connection."""
    from django.db import connection

    connection.ensure_connection()
    terminate_backend(connection.connection.get_backend_pid())
