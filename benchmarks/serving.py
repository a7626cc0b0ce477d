"""Upload-to-stored-prediction latency with the real processes.

A client POSTs a full-size JPEG to the API of a real gunicorn on 127.0.0.1 (token auth), then
polls PostgreSQL every 2 ms until the study's prediction row exists. A real `celery worker`
(prefork, as docker-compose runs it) on Redis does the work. Measured sequentially (one upload
at a time) and in bursts (several uploads at the same instant, which the worker micro-batches).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import requests

POLL_SECONDS = 0.002
PREDICTION_SQL = (
    "SELECT p.latency_ms, p.outcome FROM diagnostics_prediction p JOIN diagnostics_image i ON p.image_id = i.id "
    "WHERE i.study_id = %s AND p.role = 'primary' LIMIT 1"
)


def upload(session: requests.Session, base_url: str, *, patient_id: int, film: bytes, name: str) -> int:
    response = session.post(
        f"{base_url}/api/v1/studies/",
        data={"patient_id": str(patient_id), "modality": "CR", "view_position": "PA"},
        files={"images": (name, film, "image/jpeg")},
        timeout=60,
    )
    if response.status_code != 202:
        raise RuntimeError(f"upload answered {response.status_code}: {response.text[:300]}")
    return int(response.json()["id"])


def wait_for_prediction(cursor: Any, study_id: int, *, timeout: float = 60.0) -> float | None:
    """perf_counter() when the study's prediction was first seen; None on timeout."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        cursor.execute(PREDICTION_SQL, [study_id])
        if cursor.fetchone() is not None:
            return time.perf_counter()
        time.sleep(POLL_SECONDS)
    return None


def one_upload(base_url: str, token: str, patient_id: int, film: bytes, name: str, connect: Any) -> dict[str, Any]:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    connection = connect()
    try:
        with connection.cursor() as cursor:
            started = time.perf_counter()
            study_id = upload(session, base_url, patient_id=patient_id, film=film, name=name)
            accepted = time.perf_counter()
            seen = wait_for_prediction(cursor, study_id)
            worker_ms = outcome = None
            if seen is not None:
                cursor.execute(PREDICTION_SQL, [study_id])
                latency, outcome = cursor.fetchone()
                worker_ms = float(latency)
    finally:
        connection.close()
        session.close()
    return {
        "study_id": study_id,
        "total_ms": (seen - started) * 1000.0 if seen is not None else None,
        "api_ms": (accepted - started) * 1000.0,
        "after_accept_ms": (seen - accepted) * 1000.0 if seen is not None else None,
        # Stored by the worker: this image's decode plus its batch's model call.
        "worker_decode_model_ms": worker_ms,
        # "scored", or "not_analysable" when the input gate refused the film (then no model call was timed).
        "outcome": outcome,
    }


def run_serving(
    *,
    base_url: str,
    token: str,
    patient_ids: Sequence[int],
    films: Sequence[bytes],
    connect: Any,
    sequential: int = 100,
    bursts: int = 10,
    burst_sizes: Sequence[int] = (5, 10),
    warmup: int = 5,
    log: Any = print,
) -> dict[str, Any]:
    def run(index: int) -> dict[str, Any]:
        film = films[index % len(films)]
        return one_upload(base_url, token, patient_ids[index % len(patient_ids)], film, f"film{index}.jpeg", connect)

    for index in range(warmup):  # first requests of each gunicorn worker, first task of each pool child
        run(index)
    log(f"serving: {sequential} sequential uploads")
    rows = [run(warmup + i) for i in range(sequential)]
    results: dict[str, Any] = {"sequential": summarize(rows)}
    results["bursts"] = []
    for burst_size in burst_sizes:
        log(f"serving: {bursts} bursts of {burst_size}")
        results["bursts"].append(run_bursts(run, bursts=bursts, burst_size=burst_size))
    results["film_kb"] = [len(film) / 1024 for film in films]
    return results


def run_bursts(run: Any, *, bursts: int, burst_size: int) -> dict[str, Any]:
    """`bursts` times, `burst_size` clients upload at the same instant; then a pause."""
    rows: list[dict[str, Any]] = []
    for burst in range(bursts):
        barrier = threading.Barrier(burst_size)
        out: list[dict[str, Any]] = []
        lock = threading.Lock()

        def client(
            i: int,
            burst: int = burst,
            barrier: threading.Barrier = barrier,
            out: list[dict[str, Any]] = out,
            lock: threading.Lock = lock,
        ) -> None:
            barrier.wait()
            row = run(100_000 * burst_size + burst * burst_size + i)
            with lock:
                out.append(row)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(burst_size)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        rows.extend(out)
        time.sleep(0.5)
    return summarize(rows) | {"bursts": bursts, "burst_size": burst_size}


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    done = [row for row in rows if row["total_ms"] is not None]

    def pct(key: str, q: float) -> float | None:
        values = [row[key] for row in done if row[key] is not None]
        return float(np.percentile(values, q)) if values else None

    return {
        "uploads": len(rows),
        "timed_out": len(rows) - len(done),
        # Only scored films time the model: a refused one would make the figures look faster than serving is.
        "not_analysable": sum(1 for row in rows if row.get("outcome") == "not_analysable"),
        **{f"{key}_p{q}": pct(key, q) for key in ("total_ms", "api_ms", "after_accept_ms") for q in (50, 95, 99)},
        "worker_decode_model_ms_p50": pct("worker_decode_model_ms", 50),
        "total_ms_max": max((row["total_ms"] for row in done), default=None),
    }
