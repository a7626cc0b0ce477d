"""python -m benchmarks.throughput: end-to-end studies per second at saturation, and where the time goes.

    python -m benchmarks.throughput [--clients 8] [--seconds 30] [--films-dir DIR] [--json FILE]

The production stack on 127.0.0.1, as benchmarks.faults starts it: gunicorn (3 sync workers), the
inference worker (2 processes), the maintenance worker and beat, PostgreSQL (its own `portal_bench_throughput`
database) and a Redis of its own. N API clients each post a real chest film and post the next as soon as
the answer comes (a closed loop, no think time) for S seconds. Counted from the database: studies whose
prediction was stored inside the window, per second. Per study (medians): the API's answer time seen by
the client, accept to stored prediction, and the worker's decode + model time. Where the time goes: the
CPU seconds each group of processes used during the window (from /proc), against the 2 cores' 2 x S.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("BENCH_DATABASE_NAME", "portal_bench_throughput")  # before benchmarks.env is imported

from . import env as bench  # noqa: E402
from .faults import Redis, Stack, log  # noqa: E402

FIXTURE_FILMS = bench.ROOT / "tests" / "fixtures" / "films"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _films(folder: Path | None) -> list[bytes]:
    paths = sorted((folder or FIXTURE_FILMS).rglob("*.jpeg"))[:16]
    if not paths:
        raise SystemExit(f"no *.jpeg films under {folder or FIXTURE_FILMS}")
    return [path.read_bytes() for path in paths]


def _process_cpu_seconds() -> dict[int, tuple[str, int, float]]:
    """pid -> (command line, parent pid, user+system CPU seconds) for every process."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        found[int(entry.name)] = (command, int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
    return found


def _group(pid: int, processes: dict[int, tuple[str, int, float]], roots: dict[int, str]) -> str:
    seen = pid
    while seen in processes:
        if seen in roots:
            return roots[seen]
        seen = processes[seen][1]
    command = processes[pid][0]
    if command.startswith("postgres"):
        return "postgresql"
    if "redis-server" in command:
        return "redis"
    return ""


def cpu_by_group(before: dict, after: dict, roots: dict[int, str]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for pid, (_, _, seconds) in after.items():
        group = _group(pid, after, roots)
        if not group:
            continue
        used = seconds - (before[pid][2] if pid in before else 0.0)
        totals[group] = round(totals.get(group, 0.0) + used, 1)
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--films-dir", type=Path, help="real chest films (*.jpeg); default: the tests' four")
    parser.add_argument(
        "--backlog-limits",
        default="0,40",
        help="INFERENCE_BACKLOG_LIMIT of each run, in the same run (0: no limit, what the portal did before)",
    )
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    films = _films(args.films_dir)
    creds = _fresh_database(films[0])
    results = []
    for limit in [int(value) for value in args.backlog_limits.split(",")]:
        os.environ["INFERENCE_BACKLOG_LIMIT"] = str(limit)  # bench_env copies the environment
        result = run_saturation(films, creds, clients=args.clients, seconds=args.seconds)
        result = {"inference_backlog_limit": limit, **result}
        print(json.dumps(result, indent=2), flush=True)
        results.append(result)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


def _fresh_database(film: bytes) -> dict[str, Any]:
    """The benchmark's database, empty and migrated, with a care team, patients and an API token."""
    film_path = bench.WORKDIR / "throughput-film.jpeg"
    film_path.parent.mkdir(parents=True, exist_ok=True)
    film_path.write_bytes(film)
    return bench.seeded_database(film=film_path, studies=0, patients=50, env=bench.bench_env())


def run_saturation(films: list[bytes], creds: dict[str, Any], *, clients: int, seconds: float) -> dict[str, Any]:
    """One closed-loop run against a freshly started stack (the database is kept: rows are told apart by
    time). A client answered 429 or 503 waits the Retry-After seconds, as the API asks."""
    import requests

    broker = Redis(persistent=True)
    broker.start()
    stack = Stack(broker.url)
    answers: list[tuple[float, int, float]] = []  # (started, status, seconds)
    lock = threading.Lock()
    try:
        stack.start()

        def client(index: int, until: float) -> None:
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {creds['api_token']}"
            sent = 0
            while time.time() < until:
                film = films[(index + sent) % len(films)]
                started = time.time()
                retry_after = 0.0
                try:
                    response = session.post(
                        f"{stack.base_url}/api/v1/studies/",
                        data={"patient_id": creds["patient_ids"][(index + sent) % len(creds["patient_ids"])]},
                        files={"images": ("film.jpeg", film, "image/jpeg")},
                        timeout=60,
                    )
                    status = response.status_code
                    if status in (429, 503):
                        retry_after = float(response.headers.get("Retry-After", "1"))
                except requests.RequestException:
                    status = 0
                with lock:
                    answers.append((started, status, time.time() - started))
                sent += 1
                time.sleep(min(retry_after, max(0.0, until - time.time())))

        warm = time.time() + 5.0  # first requests of each web worker and worker process
        threads = [threading.Thread(target=client, args=(i, warm)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if not any(status == 202 for _, status, _ in answers):
            raise RuntimeError(f"no upload accepted while warming up: {sorted({a[1] for a in answers})}")
        _wait_until_done(time.time() - 30, limit_seconds=120)
        answers.clear()
        groups = {"web (gunicorn)": stack.web, "inference worker": stack.worker,
                  "maintenance worker and beat": stack.maintenance}  # fmt: skip
        roots = {service.process.pid: name for name, service in groups.items() if service.process is not None}
        roots[stack.beat.process.pid if stack.beat.process else -1] = "maintenance worker and beat"
        roots[os.getpid()] = "clients (this benchmark)"  # reached only by processes no service started
        log(f"throughput: {clients} clients, closed loop, {seconds:.0f} s")
        cpu_before = _process_cpu_seconds()
        window_start = time.time()
        window_end = window_start + seconds
        threads = [threading.Thread(target=client, args=(i, window_end)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        cpu = cpu_by_group(cpu_before, _process_cpu_seconds(), roots)
        rows = _wait_until_done(window_start, limit_seconds=180)
    finally:
        stack.stop()
        broker.kill()
    done_in_window = [row for row in rows if row["stored_at"] is not None and row["stored_at"] <= window_end]
    ok = [spent for started, status, spent in answers if status == 202 and started <= window_end]
    statuses: dict[str, int] = {}
    for _, status, _ in answers:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "clients": clients,
        "seconds": seconds,
        "films": len(films),
        "answers": statuses,
        "studies_done_in_window": len(done_in_window),
        "studies_per_second": round(len(done_in_window) / seconds, 1),
        "never_done": sum(1 for row in rows if row["stored_at"] is None),
        "median_ms": {
            "api_answer_202": round(_median(ok) * 1000, 1) if ok else None,
            "accept_to_stored": _median_of(rows, "accept_to_stored_ms"),
            "worker_decode_and_model": _median_of(rows, "worker_ms"),
        },
        "cpu_seconds": {**cpu, "available": round(2 * seconds, 1)},
        "cpu_ms_per_done_study": {
            group: round(used * 1000 / max(1, len(done_in_window)), 1) for group, used in cpu.items()
        },
    }


def _wait_until_done(since: float, *, limit_seconds: float) -> list[dict[str, Any]]:
    rows = _study_rows(since)
    deadline = time.time() + limit_seconds
    while any(row["stored_at"] is None for row in rows) and time.time() < deadline:
        time.sleep(1)
        rows = _study_rows(since)
    return rows


def _study_rows(since: float) -> list[dict[str, Any]]:
    connection = bench.database_connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT s.id, extract(epoch FROM s.created_at), extract(epoch FROM min(p.created_at)), "
                "min(p.latency_ms) FROM diagnostics_study s JOIN diagnostics_image i ON i.study_id = s.id "
                "LEFT JOIN diagnostics_prediction p ON p.image_id = i.id AND p.role = 'primary' "
                "WHERE s.created_at >= to_timestamp(%s) GROUP BY s.id",
                [since],
            )
            found = cursor.fetchall()
    finally:
        connection.close()
    return [
        {
            "id": study_id,
            "stored_at": float(stored) if stored is not None else None,
            "accept_to_stored_ms": (float(stored) - float(created)) * 1000 if stored is not None else None,
            "worker_ms": float(worker_ms) if worker_ms is not None else None,
        }
        for study_id, created, stored, worker_ms in found
    ]


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _median_of(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [row[key] for row in rows if row[key] is not None]
    return round(_median(values), 1) if values else None


if __name__ == "__main__":
    raise SystemExit(main())
