"""Start and stop a real Celery worker process for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
from django.conf import settings

from diagnostics.models import Study
from portal.settings.test import REDIS_OWNER_KEY

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = ROOT / "var" / "test-logs"


class CeleryWorker:
    def __init__(
        self,
        *,
        database_name: str,
        queues: str = "inference",
        extra_env: dict[str, str] | None = None,
        hold_claimed_studies_s: float = 0,
        pool: str = "solo",
        concurrency: int = 1,
        cwd: Path | None = None,
    ) -> None:
        self.database_name = database_name
        self.queues = queues
        self.extra_env = extra_env or {}
        # Chaos tests: keep each claimed study running this long (tests/fault_injection.py).
        self.hold_claimed_studies_s = hold_claimed_studies_s
        # solo runs tasks in the worker's own process; prefork (production's) in pool processes.
        self.pool, self.concurrency = pool, concurrency
        # A worker "on another host" runs from a folder of its own (the code comes through PYTHONPATH).
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = LOG_DIR / "celery-worker.log"

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        database_url = settings.DATABASES["default"]
        env.update(
            DJANGO_SETTINGS_MODULE="portal.settings.test",
            # The worker must use the test database pytest-django created.
            DATABASE_URL=(
                f"postgres://{database_url['USER']}@{database_url['HOST']}:{database_url['PORT']}/{self.database_name}"
            ),
            CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
            MEDIA_ROOT=str(settings.MEDIA_ROOT),
            PYTHONUNBUFFERED="1",
            # The variant choice (ml/serving/variants.py) measures for a minute when it finds the external data;
            # test workers serve fp32 unless a test asks otherwise (tests/test_inference_runtime.py does).
            PNEUMONIA_SERVING_VARIANT=os.environ.get("PNEUMONIA_SERVING_VARIANT", "fp32"),
        )
        if self.cwd is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
        env.update(self.extra_env)
        if self.hold_claimed_studies_s:
            env["TEST_HOLD_CLAIMED_STUDIES_S"] = str(self.hold_claimed_studies_s)
        return env

    def purge_queues(self) -> None:
        # This run's own database (portal/settings/test.py claims one per run); keep the claim.
        broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        owner = broker.get(REDIS_OWNER_KEY)
        broker.flushdb()
        if owner is not None:
            broker.set(REDIS_OWNER_KEY, owner)

    def start(self, timeout: float = 60.0) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        # A fresh log per start, so "ready" is this process's own line.
        self.log_path = LOG_DIR / f"celery-worker-{os.getpid()}-{time.time_ns()}.log"
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker",
                "worker",
                "-Q",
                self.queues,
                f"--pool={self.pool}",
                f"--concurrency={self.concurrency}",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"test-{os.getpid()}-{time.monotonic_ns()}@%h",
                "-l",
                "info",
                *(["--include", "tests.fault_injection"] if self.hold_claimed_studies_s else []),
            ],
            cwd=self.cwd or ROOT,
            env=self.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Celery worker exited early; see {self.log_path}:\n{self.log_tail()}")
            if b" ready." in self.log_path.read_bytes():
                return
            time.sleep(0.2)
        raise RuntimeError(f"Celery worker not ready after {timeout}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL, as when the machine runs out of memory: no chance to clean up."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def pool_pids(self) -> list[int]:
        """The worker's pool processes (prefork), from /proc."""
        if self.process is None:
            return []
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()] if children.exists() else []

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def wait_for_study(study_id: int, worker: CeleryWorker, timeout: float = 60.0) -> Study:
    """Poll until the study is done or failed; on time-out, show the worker's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        study = Study.objects.get(pk=study_id)
        if study.status in (Study.Status.DONE, Study.Status.FAILED):
            return study
        time.sleep(0.2)
    raise AssertionError(f"study {study_id} still {study.status} after {timeout}s; worker log:\n{worker.log_tail()}")


@contextlib.contextmanager
def running_worker(**options: Any) -> Iterator[CeleryWorker]:
    """A started worker on the test database (CeleryWorker options: queues, extra_env, ...), stopped after."""
    worker = CeleryWorker(database_name=settings.DATABASES["default"]["NAME"], **options)
    worker.purge_queues()
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
