"""A small load test of a real gunicorn on 127.0.0.1, in two models, each bounded in time.

Each virtual client logs in (session cookie, CSRF, Argon2 as in production; before the timed window),
then repeats: worklist (first page), a study page, the API study list (token); in one round out of 5
(at random) an upload through the API (a full-size JPEG); in one out of 10 a logout and login.

- *paced* (`think=(low, high)`): before each request a client waits a random think time, uniform in
  [low, high] seconds (locust's `between(1, 3)` by default), as clinicians and integrations do; the
  generators are seeded. This is the model the issue's latency target is read against.
- *saturation* (`think=None`): a closed loop with no think time, each client sends its next request
  as soon as the previous answer arrives: the capacity, and the queueing it causes.

Clients are threads spread over client processes, so one interpreter's GIL does not stretch the
measured latencies. Requests started inside the window are counted.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import re
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import requests

from .env import HOST

CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
EXPECTED = {"login": 302, "worklist": 200, "study detail": 200, "API study list": 200, "upload": 202}
ENDPOINTS = tuple(EXPECTED)

UPLOAD_SHARE = 0.2  # of rounds; at random, so that short runs with many clients still upload
RELOGIN_SHARE = 0.1
DEFAULT_THINK_S = (1.0, 3.0)
Think = tuple[float, float] | None  # seconds, uniform; None: no think time (saturation)
Row = tuple[str, float, float, int, str]  # endpoint, start (epoch s), ms, status, error


class Client:
    def __init__(
        self, base_url: str, creds: dict[str, Any], film: bytes, seed: int, *, think: Think = None, stop: float = 0.0
    ) -> None:
        assert base_url.startswith(f"http://{HOST}:"), base_url  # never any other address
        self.base = base_url
        self.creds = creds
        self.film = film
        self.random = random.Random(seed)  # noqa: S311 - which study to open, not a secret
        self.think_random = random.Random(seed + 7_919)  # noqa: S311 - think times, apart from the request mix
        self.think = think
        self.stop = stop
        self.web = requests.Session()
        self.api = requests.Session()
        self.api.headers["Authorization"] = f"Bearer {creds['api_token']}"
        self.rows: list[Row] = []

    def timed(self, endpoint: str, call: Any) -> requests.Response | None:
        started = time.time()
        t0 = time.perf_counter()
        try:
            response = call()
        except requests.RequestException as error:
            self.rows.append((endpoint, started, (time.perf_counter() - t0) * 1000.0, 0, repr(error)[:200]))
            return None
        ms = (time.perf_counter() - t0) * 1000.0
        problem = "" if response.status_code == EXPECTED[endpoint] else response.text[:200]
        self.rows.append((endpoint, started, ms, response.status_code, problem))
        return response

    def login(self) -> None:
        page = self.web.get(f"{self.base}/login/", timeout=60)
        match = CSRF_INPUT.search(page.text)
        token = match.group(1) if match else ""
        form = {"username": self.creds["username"], "password": self.creds["password"], "csrfmiddlewaretoken": token}
        self.timed("login", lambda: self.web.post(f"{self.base}/login/", data=form, allow_redirects=False, timeout=60))

    def logout(self) -> None:
        token = self.web.cookies.get("csrftoken", "")
        self.web.post(f"{self.base}/logout/", data={"csrfmiddlewaretoken": token}, allow_redirects=False, timeout=60)

    def pause(self) -> bool:
        """The think time before a request (none in saturation); False once the window is over."""
        if self.think is not None:
            wait = self.think_random.uniform(*self.think)
            if time.time() + wait >= self.stop:
                # The request would start after the window. Sit out the rest of it: drawing again
                # would keep only the short waits and send every client's request in the last second.
                time.sleep(max(0.0, self.stop - time.time()))
                return False
            time.sleep(wait)
        return time.time() < self.stop

    def round(self) -> None:
        study_id = self.random.choice(self.creds["study_ids"])
        patient_id = self.random.choice(self.creds["patient_ids"])
        upload = self.random.random() < UPLOAD_SHARE
        relogin = self.random.random() < RELOGIN_SHARE
        steps: list[tuple[str, Any]] = [
            ("worklist", lambda: self.web.get(f"{self.base}/", timeout=60)),
            ("study detail", lambda: self.web.get(f"{self.base}/studies/{study_id}/", timeout=60)),
            ("API study list", lambda: self.api.get(f"{self.base}/api/v1/studies/", timeout=60)),
        ]
        if upload:
            steps.append(
                (
                    "upload",
                    lambda: self.api.post(
                        f"{self.base}/api/v1/studies/",
                        data={"patient_id": str(patient_id), "modality": "CR"},
                        files={"images": ("film.jpeg", self.film, "image/jpeg")},
                        timeout=60,
                    ),
                )
            )
        for endpoint, call in steps:
            if not self.pause():
                return
            self.timed(endpoint, call)
        if relogin and self.pause():
            self.logout()
            if self.pause():
                self.login()


def _client_process(
    base_url: str,
    creds: dict[str, Any],
    film: bytes,
    threads: int,
    seed: int,
    think: Think,
    start: float,
    stop: float,
    out: Any,
) -> None:
    clients = [Client(base_url, creds, film, seed=seed + i, think=think, stop=stop) for i in range(threads)]

    def loop(client: Client) -> None:
        client.login()  # before the window: a shift's first logins are not the steady state
        time.sleep(max(0.0, start - time.time()))
        while time.time() < stop:
            client.round()

    workers = [threading.Thread(target=loop, args=(client,)) for client in clients]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out.send([row for client in clients for row in client.rows])
    out.close()


def parse_think(text: str) -> Think:
    """`"1,3"` -> (1.0, 3.0) seconds; `"0"` or `"none"` -> None (no think time)."""
    if text.strip().lower() in ("", "0", "none", "off"):
        return None
    parts = [float(part) for part in text.split(",")]
    low, high = (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    if len(parts) > 2 or low < 0 or high < low:
        raise ValueError(f"think time {text!r}: expected LOW,HIGH seconds with 0 <= LOW <= HIGH")
    return (low, high) if high > 0 else None


def run_level(
    base_url: str,
    creds: dict[str, Any],
    film: bytes,
    *,
    clients: int,
    duration: float,
    think: Think = None,
    seed: int = 0,
    processes: int = 2,
) -> dict[str, Any]:
    """`clients` concurrent virtual users for `duration` seconds; statistics per endpoint.

    `think`: (low, high) seconds of uniform random think time before each request (paced clients),
    or None for a closed loop without think time (saturation). `seed` seeds every client's generators.
    """
    context = mp.get_context("fork")
    processes = max(1, min(processes, clients))
    start = time.time() + max(2.0, 0.5 * clients)  # time for every client's first login
    stop = start + duration
    pipes, procs = [], []
    for index in range(processes):
        threads = clients // processes + (1 if index < clients % processes else 0)
        receive, send = context.Pipe(duplex=False)
        proc = context.Process(
            target=_client_process,
            args=(base_url, creds, film, threads, seed + index * 1000, think, start, stop, send),
        )
        proc.start()
        pipes.append(receive)
        procs.append(proc)
    rows: list[Row] = []
    for receive in pipes:
        rows.extend(receive.recv())
    for proc in procs:
        proc.join(120)
    level = summarize(rows, clients=clients, start=start, stop=stop)
    level["model"] = "saturation" if think is None else "paced"
    level["think_s"] = list(think) if think is not None else None
    level["seed"] = seed
    return level


def summarize(rows: Sequence[Row], *, clients: int, start: float, stop: float) -> dict[str, Any]:
    window = [row for row in rows if start <= row[1] < stop]
    duration = stop - start
    endpoints: dict[str, Any] = {}
    for endpoint in ENDPOINTS:
        mine = [row for row in window if row[0] == endpoint]
        ok = [row[2] for row in mine if not row[4] and row[3] == EXPECTED[endpoint]]
        errors = [row for row in mine if row[4] or row[3] != EXPECTED[endpoint]]
        endpoints[endpoint] = {
            "requests": len(mine),
            "errors": len(errors),
            "error_samples": [f"{row[3]} {row[4][:120]}" for row in errors[:3]],
            "per_s": len(mine) / duration,
            **(
                {f"p{q}_ms": float(np.percentile(ok, q)) for q in (50, 95, 99)} | {"mean_ms": float(np.mean(ok))}
                if ok
                else {}
            ),
        }
    total_errors = sum(item["errors"] for item in endpoints.values())
    all_ok = [row[2] for row in window if not row[4] and row[3] == EXPECTED[row[0]]]
    return {
        "clients": clients,
        "duration_s": duration,
        "requests": len(window),
        "errors": total_errors,
        "per_s": len(window) / duration,
        **({f"p{q}_ms": float(np.percentile(all_ok, q)) for q in (50, 95, 99)} if all_ok else {}),
        "endpoints": endpoints,
    }
