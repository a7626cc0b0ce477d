"""python -m benchmarks.faults: inject each fault into the running stack and count what it left.

    python -m benchmarks.faults [--studies 20] [--quick] [--only worker_kill,redis_outage] [--json FILE]

The stack is production's, on 127.0.0.1: gunicorn, a Celery inference worker (2 processes), the
maintenance worker and beat (the reconciler every 10 s, as configured), PostgreSQL (its own
`portal_bench_faults` database) and a Redis of its own (append-only file, as in docker-compose.yml,
except where a fault needs it without). Studies are posted through the API with a real film, each with
an Idempotency-Key, and a post the portal answers 503, 5xx or not at all is sent again with the same key
(as a client should) until it is accepted or 60 s have passed. For each fault it prints: submitted,
done, failed, stuck (still queued or running when it gave up), duplicated (more than one prediction
per film and model), orphaned files (anywhere under MEDIA_ROOT: studies/, derivatives/, heatmaps/,
the DICOM inbox, with no row naming them), whether every worker process (main and pool) it started
with is still running, and the seconds from the end of the fault (and of the posting) until every
submitted study was done.

The faults: a SIGKILL of the whole inference worker once a study is running (so that the kill lands
mid-study and the lease path is measured), Redis killed and restarted 10 times (each while a study
runs), Redis down for 60 s (`--quick`: 20 s), 20 s of database disconnects (every backend of the app
terminated every 0.5 s), web workers killed, and the queue lost (Redis flushed).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("BENCH_DATABASE_NAME", "portal_bench_faults")

from . import env as bench  # noqa: E402 - the database name above must be set first

RECOVERY_LIMIT_S = 180.0


def log(message: str) -> None:
    print(f"[faults {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Redis:
    """A redis-server of this run's own (so that killing it disturbs nobody else)."""

    def __init__(self, *, persistent: bool) -> None:
        self.port = bench.free_port()
        self.persistent = persistent
        self.directory = bench.WORKDIR / "faults-redis"
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        self.directory.mkdir(parents=True, exist_ok=True)
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        command = ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", str(self.port),
                   "--save", "", "--dir", str(self.directory), "--logfile", str(self.directory / "redis.log"),
                   *persistence]  # fmt: skip
        subprocess.run(command, check=True)  # noqa: S603 - the Debian redis-server, on 127.0.0.1
        for _ in range(100):
            try:
                if redis.Redis(port=self.port).ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("the fault run's Redis did not start")

    def kill(self) -> None:
        import redis

        try:
            redis.Redis(port=self.port).shutdown(nosave=True)
        except redis.ConnectionError:
            pass  # shutting down closes the connection


class Stack:
    def __init__(self, redis_url: str) -> None:
        self.env = bench.bench_env(CELERY_BROKER_URL=redis_url, LOG_LEVEL="INFO")
        self.port = bench.free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.web = bench.gunicorn(self.port, env=self.env)
        self.worker = bench.celery_worker(env=self.env)
        self.maintenance = bench.Service(
            "celery-maintenance",
            [sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", "maintenance", "--concurrency", "1",
             "-n", f"faults-maintenance-{os.getpid()}@%h", "-l", "info"],
            self.env,
        )  # fmt: skip
        schedule = bench.WORKDIR / "faults-beat-schedule"
        self.beat = bench.Service(
            "celery-beat", [sys.executable, "-m", "celery", "-A", "worker", "beat", "-l", "info", "-s", str(schedule)],
            self.env,
        )  # fmt: skip

    def start(self) -> None:
        for service in (self.web, self.worker, self.maintenance, self.beat):
            service.start()
        self.web.wait_for_http(f"{self.base_url}/login/")
        self.worker.wait_for_log(" ready.")
        self.maintenance.wait_for_log(" ready.")

    def restart_worker(self) -> None:
        self.worker = bench.celery_worker(env=self.env)
        self.worker.start()
        self.worker.wait_for_log(" ready.")

    def worker_processes(self) -> set[int]:
        """The inference worker's main process and its pool processes."""
        assert self.worker.process is not None
        return {self.worker.process.pid, *self.worker.child_pids()}

    def workers_alive(self, before: set[int]) -> bool:
        """Every worker process of `before` still running; after a fault that kills the worker on
        purpose (worker_kill), the new worker and its pool running instead."""
        assert self.worker.process is not None
        if self.worker.process.poll() is not None or not self.worker.child_pids():
            return False
        return self.worker.process.pid not in before or before <= self.worker_processes()

    def stop(self) -> None:
        for service in (self.beat, self.maintenance, self.worker, self.web):
            service.stop()


POST_RETRY_FOR_S = 60.0


def post_study(base_url: str, token: str, patient_id: int, film: bytes) -> tuple[int | None, int]:
    """Post one study with an Idempotency-Key, sending it again with the same key while the portal
    answers 5xx, 429 or nothing (a client's retry). Returns (the study id or None, the retries it took)."""
    import uuid

    import requests

    key = str(uuid.uuid4())
    deadline = time.monotonic() + POST_RETRY_FOR_S
    retries = 0
    while True:
        try:
            response = requests.post(
                f"{base_url}/api/v1/studies/",
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
                data={"patient_id": patient_id},
                files={"images": ("film.jpeg", film, "image/jpeg")},
                timeout=30,
            )
        except requests.RequestException:
            response = None
        if response is not None and response.status_code in (200, 201, 202):
            return int(response.json()["id"]), retries
        if response is not None and response.status_code < 500 and response.status_code != 429:
            log(f"post refused: {response.status_code} {response.text[:200]}")
            return None, retries
        if time.monotonic() > deadline:
            return None, retries
        retries += 1
        wait = float(response.headers.get("Retry-After", "1")) if response is not None else 1.0
        time.sleep(min(wait, 5.0))


def counts(study_ids: list[int]) -> dict[str, int]:
    connection = bench.database_connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT status, count(*) FROM diagnostics_study WHERE id = ANY(%s) GROUP BY status", [study_ids]
            )
            by_status = dict(cursor.fetchall())
            cursor.execute(
                "SELECT count(*) FROM (SELECT image_id, model_version_id FROM diagnostics_prediction p "
                "JOIN diagnostics_image i ON i.id = p.image_id WHERE i.study_id = ANY(%s) "
                "GROUP BY image_id, model_version_id HAVING count(*) > 1) d",
                [study_ids],
            )
            duplicated = cursor.fetchone()[0]
    finally:
        connection.close()
    return {
        "done": by_status.get("done", 0),
        "failed": by_status.get("failed", 0),
        "stuck": by_status.get("queued", 0) + by_status.get("running", 0),
        "duplicated": duplicated,
    }


def orphaned_files() -> int:
    """Files anywhere under MEDIA_ROOT that no row names (films, derivatives, heatmaps, the inbox...)."""
    connection = bench.database_connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT file FROM diagnostics_image UNION SELECT preview FROM diagnostics_image "
                "UNION SELECT window_source FROM diagnostics_image UNION SELECT heatmap FROM diagnostics_prediction"
            )
            referenced = {row[0] for row in cursor.fetchall() if row[0]}
    finally:
        connection.close()
    media = bench.WORKDIR / "media"
    files = [p for p in media.rglob("*") if p.is_file()] if media.is_dir() else []
    return sum(1 for p in files if str(p.relative_to(media)) not in referenced)


def wait_for_running(timeout: float = 60.0) -> bool:
    """Until some study is running (a kill then lands mid-study)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        connection = bench.database_connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM diagnostics_study WHERE status = 'running'")
                if cursor.fetchone()[0]:
                    return True
        finally:
            connection.close()
        time.sleep(0.05)
    return False


def wait_recovered(study_ids: list[int], fault_ended: float) -> float | None:
    while time.monotonic() - fault_ended < RECOVERY_LIMIT_S:
        state = counts(study_ids)
        if state["stuck"] == 0:
            return time.monotonic() - fault_ended
        time.sleep(1)
    return None


def run_fault(name: str, inject: Callable[[Callable[[], None]], None], *, stack: Stack, creds: dict[str, Any],
              film: bytes, studies: int) -> dict[str, Any]:  # fmt: skip
    """Post `studies` studies from a thread while `inject` runs the fault (given a way to wait until
    a few were posted); then measure until every posted study is finished."""
    posted: list[int] = []
    refused = retried = 0

    def submit() -> None:
        nonlocal refused, retried
        for i in range(studies):
            study_id, retries = post_study(stack.base_url, creds["api_token"], creds["patient_ids"][i % 50], film)
            retried += retries
            if study_id is None:
                refused += 1
            else:
                posted.append(study_id)
            time.sleep(0.1)

    def some_posted() -> None:
        deadline = time.monotonic() + 60
        while len(posted) < max(2, studies // 4) and time.monotonic() < deadline:
            time.sleep(0.05)

    before_orphans = orphaned_files()
    worker_processes = stack.worker_processes()
    log(f"{name}: posting {studies} studies")
    sender = threading.Thread(target=submit)
    sender.start()
    inject(some_posted)
    sender.join()
    fault_ended = time.monotonic()
    recovered = wait_recovered(posted, fault_ended)
    row = {"fault": name, "submitted": len(posted), "post_retries": retried, "refused_at_submission": refused,
           **counts(posted), "orphaned_files": orphaned_files() - before_orphans,
           "workers_alive": stack.workers_alive(worker_processes),
           "seconds_to_recover": None if recovered is None else round(recovered, 1)}  # fmt: skip
    if row["orphaned_files"]:
        # What beat's hourly sweep does once the grace period has passed (nothing is uploading now).
        sweep = (
            "from diagnostics.services.storage_sweep import media_sweep_orphans; media_sweep_orphans(grace_seconds=0)"
        )
        bench.manage("shell", "-c", sweep, env=stack.env)
        row["orphaned_after_sweep"] = orphaned_files() - before_orphans
    log(f"{name}: {row}")
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faults", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--studies", type=int, default=20, help="studies posted during each fault")
    parser.add_argument("--only", help="comma-separated faults")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--quick", action="store_true", help="a 20 s Redis outage instead of 60 s")
    args = parser.parse_args(argv)
    from benchmarks.model_latency import synthetic_film

    film = synthetic_film(seed=1)
    (bench.WORKDIR / "film.jpeg").parent.mkdir(parents=True, exist_ok=True)
    (bench.WORKDIR / "film.jpeg").write_bytes(film)
    broker = Redis(persistent=True)
    broker.start()
    log(f"database {bench.DATABASE_NAME}: reset, migrate, seed")
    stack = Stack(broker.url)
    creds = bench.seeded_database(film=bench.WORKDIR / "film.jpeg", studies=0, patients=50, env=stack.env)

    def worker_kill(ready: Callable[[], None]) -> None:
        ready()
        if not wait_for_running():
            log("worker_kill: no study was running within 60 s; killing anyway")
        assert stack.worker.process is not None
        os.killpg(stack.worker.process.pid, signal.SIGKILL)  # no clean-up runs, as with the OOM killer
        time.sleep(1)
        stack.restart_worker()

    def redis_restarts(ready: Callable[[], None]) -> None:
        ready()
        for _ in range(10):
            wait_for_running(timeout=5)
            broker.kill()
            time.sleep(1.0)
            broker.start()
            time.sleep(0.7)

    def redis_outage(ready: Callable[[], None]) -> None:
        ready()
        wait_for_running(timeout=10)
        broker.kill()
        time.sleep(20 if args.quick else 60)
        broker.start()

    def database_disconnects(ready: Callable[[], None]) -> None:
        """20 s of storm: every backend of the app's database terminated every 0.5 s."""
        ready()
        connection = bench.database_connect()
        connection.autocommit = True
        terminated = 0
        ends = time.monotonic() + 20
        with connection.cursor() as cursor:
            while time.monotonic() < ends:
                cursor.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    [bench.DATABASE_NAME],
                )
                terminated += cursor.fetchone()[0]
                time.sleep(0.5)
        connection.close()
        log(f"database_disconnects: {terminated} sessions terminated in 20 s")

    def web_worker_kills(ready: Callable[[], None]) -> None:
        ready()
        for _ in range(3):
            children = stack.web.child_pids()
            if children:
                os.kill(children[0], signal.SIGKILL)  # gunicorn starts a new one
            time.sleep(0.4)

    def queue_loss(ready: Callable[[], None]) -> None:
        import redis

        stack.worker.stop()  # the studies wait in the queue...
        ready()
        redis.Redis.from_url(broker.url).flushdb()  # ...which is lost, as with a Redis without persistence
        stack.restart_worker()

    faults: dict[str, Callable[[Callable[[], None]], None]] = {
        "worker_kill": worker_kill,
        "redis_restarts": redis_restarts,
        "redis_outage": redis_outage,
        "database_disconnects": database_disconnects,
        "web_worker_kills": web_worker_kills,
        "queue_loss": queue_loss,
    }
    chosen = args.only.split(",") if args.only else list(faults)
    rows = []
    try:
        stack.start()
        for name in chosen:
            rows.append(run_fault(name, faults[name], stack=stack, creds=creds, film=film, studies=args.studies))
    finally:
        stack.stop()
        broker.kill()
    print(render(rows))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


def render(rows: list[dict[str, Any]]) -> str:
    columns = ["fault", "submitted", "post_retries", "refused_at_submission", "done", "failed", "stuck",
               "duplicated", "orphaned_files", "orphaned_after_sweep", "workers_alive",
               "seconds_to_recover"]  # fmt: skip
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
