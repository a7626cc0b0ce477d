"""python -m benchmarks: the whole benchmark, then docs/performance.md (see benchmarks/__init__.py).

    python -m benchmarks                       # everything (several minutes); `make bench`
    python -m benchmarks --quick               # small counts, to check the machinery
    python -m benchmarks --skip-models         # portal only (serving + load test)
    python -m benchmarks --think 1,3 --levels 1,10,50   # the load test's paced clients and levels
    python -m benchmarks.report var/bench/results.json   # re-render the docs from saved results

The load test runs twice per level: paced clients (a random think time before each request, the
model the latency targets are read against), then saturation (no think time: the capacity).
Full-size films for the JPEG decode benchmark come from --films-dir or $PNEUMONIA_BENCH_FILMS
(e.g. ../shared/data/chest_xray/val); the int8 model's AUC needs --data-dir or $PNEUMONIA_DATA_DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import env as bench_env_module
from .env import ROOT, WORKDIR, bench_env, celery_worker, database_connect, free_port, gunicorn
from .loadtest import parse_think


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="small counts and durations (a smoke run)")
    parser.add_argument("--skip-models", action="store_true")
    parser.add_argument("--skip-portal", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--films-dir", default=os.environ.get("PNEUMONIA_BENCH_FILMS"))
    parser.add_argument("--data-dir", default=os.environ.get("PNEUMONIA_DATA_DIR"))
    parser.add_argument("--search", default="var/runs", help="also measure every artifact under this folder")
    parser.add_argument("--no-tensorflow", action="store_true")
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--levels", default="1,10,50", help="concurrent clients of the load test (both models)")
    parser.add_argument(
        "--think",
        default="1,3",
        help="paced clients: think time before each request, uniform LOW,HIGH seconds (locust's between(1, 3))",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the load test's clients (requests, think times)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per level, paced clients")
    parser.add_argument(
        "--saturation-duration",
        type=float,
        default=30.0,
        help="seconds per level, saturation (closed loop without think time: the capacity)",
    )
    parser.add_argument("--sequential", type=int, default=100)
    parser.add_argument("--bursts", type=int, default=10)
    parser.add_argument("--burst-sizes", default="5,10", help="uploads sent at the same instant")
    parser.add_argument(
        "--wait-for-idle",
        type=float,
        default=0.0,
        help="wait up to this many seconds for other `python -m ml` processes (training) to finish",
    )
    parser.add_argument("--results", default=str(WORKDIR / "results.json"))
    parser.add_argument("--report", default="docs/performance.md")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.think_s = parse_think(args.think)
    except ValueError as error:
        parser.error(str(error))
    if args.think_s is None:
        parser.error("--think: the paced clients need a think time (the saturation runs have none)")
    from benchmarks import model_latency as bench

    results: dict[str, Any] = {"command": "python -m benchmarks " + " ".join(argv or sys.argv[1:]),
                               "started_at": time.strftime("%Y-%m-%d %H:%M:%S %Z")}  # fmt: skip
    results["waited_for_idle_s"] = wait_for_idle(args.wait_for_idle)
    results["machine_at_start"] = bench.machine_info()
    results["other_ml_processes_at_start"] = bench.ml_processes()
    WORKDIR.mkdir(parents=True, exist_ok=True)
    if not args.skip_models:
        results["models"] = run_models(args)
    if not args.skip_portal:
        results["portal"] = run_portal(args)
    results["other_ml_processes_at_end"] = bench.ml_processes()
    results["load_average_end"] = list(os.getloadavg())
    previous = _load(Path(args.results))
    for key in ("models", "portal"):  # a partial run keeps the other half of the last results
        if key not in results and key in previous:
            results[key] = previous[key]
            results.setdefault("reused_from_previous_run", []).append(key)
    Path(args.results).write_text(json.dumps(results, indent=2) + "\n")
    from .report import write_report

    written = write_report(results, Path(args.report))
    log(f"results in {args.results}; wrote {', '.join(str(p) for p in written)}")
    return 0


def _load(path: Path) -> dict[str, Any]:
    try:
        loaded: dict[str, Any] = json.loads(path.read_text())
        return loaded
    except (OSError, ValueError):
        return {}


def wait_for_idle(limit_s: float) -> float:
    from benchmarks.model_latency import ml_processes

    started = time.monotonic()
    while ml_processes() and time.monotonic() - started < limit_s:
        log(f"waiting for other ml processes to finish: {ml_processes()[0][:100]}")
        time.sleep(min(30.0, max(1.0, limit_s - (time.monotonic() - started))))
    return time.monotonic() - started


def run_models(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks import model_latency as bench

    films = sorted(p for p in Path(args.films_dir).rglob("*.jpeg")) if args.films_dir else []
    search = [args.search] if args.search and Path(args.search).is_dir() else []
    data_dir = Path(args.data_dir) if args.data_dir and Path(args.data_dir).is_dir() else None
    log(
        "models: benchmarks.model_latency (GEMM ceiling, every model, TensorFlow vs ONNX Runtime, decode, int8, "
        "variants)"
    )
    return bench.run_benchmark(
        artifacts=["ml/default_model"],
        search=search,
        architectures=[] if args.quick else list(bench.SPEED_ONLY_ARCHITECTURES),
        threads=args.threads,
        max_runs=30 if args.quick else 200,
        budget_s=2.0 if args.quick else 10.0,
        tensorflow=not args.no_tensorflow,
        decode=True,
        films=films,
        quantize_data_dir=data_dir,
        serving_variants_data_dir=data_dir,
        workdir=WORKDIR,
        log=log,
    )


def run_portal(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.model_latency import synthetic_film, upload_films

    from .loadtest import run_level
    from .serving import run_serving

    studies = 300 if args.quick else args.studies
    film = synthetic_film(seed=0)
    film_path = WORKDIR / "film.jpeg"
    film_path.write_bytes(film)
    log(f"portal: database {bench_env_module.DATABASE_NAME}: reset, migrate, seed {studies} studies")
    bench_env_module.database_reset()
    bench_env_module.redis_flush()
    env = bench_env()
    started = time.perf_counter()
    bench_env_module.manage("migrate", "--noinput", env=env)
    creds_path = WORKDIR / "credentials.json"
    subprocess.run(  # noqa: S603 - our interpreter and module
        [sys.executable, "-m", "benchmarks.seed", "--studies", str(studies), "--film", str(film_path),
         "--out", str(creds_path)],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    creds = json.loads(creds_path.read_text())
    portal: dict[str, Any] = {"seeded_studies": creds["studies"], "seeded_predictions": creds["predictions"],
                              "seed_s": time.perf_counter() - started}  # fmt: skip
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    web = gunicorn(port, env=env)
    worker = celery_worker(env=env)
    portal["processes"] = {"web": " ".join(web.command[2:]), "worker": " ".join(worker.command[2:])}
    settings_names = ("INFERENCE_THREADS", "INFERENCE_MAX_BATCH", "INFERENCE_SPIN")
    portal["settings"] = {name: worker.env.get(name, "(default)") for name in settings_names}
    portal["worker_layout"] = {"processes": int(worker.command[worker.command.index("--concurrency") + 1]),
                               "threads": int(worker.env["INFERENCE_THREADS"])}  # fmt: skip
    try:
        web.start()
        worker.start()
        web.wait_for_http(f"{base_url}/login/")
        worker.wait_for_log(" ready.")
        films = upload_films(args.films_dir)
        portal["serving"] = run_serving(
            base_url=base_url,
            token=creds["api_token"],
            patient_ids=creds["patient_ids"],
            films=films,
            connect=database_connect,
            sequential=20 if args.quick else args.sequential,
            bursts=2 if args.quick else args.bursts,
            burst_sizes=[3] if args.quick else [int(size) for size in args.burst_sizes.split(",")],
            log=log,
        )
        levels = [int(level) for level in args.levels.split(",")]
        think = args.think_s
        paced_s = 10.0 if args.quick else args.duration
        saturation_s = 6.0 if args.quick else args.saturation_duration
        portal["load_paced"] = {"think_s": list(think), "seed": args.seed, "duration_s": paced_s, "levels": []}
        for clients in levels:
            log(f"load test, paced: {clients} clients, think {think[0]:g}-{think[1]:g} s, for {paced_s:.0f} s")
            level = run_level(base_url, creds, film, clients=clients, duration=paced_s, think=think, seed=args.seed)
            portal["load_paced"]["levels"].append(level)
            time.sleep(2.0)
        portal["load_saturation"] = {"think_s": None, "seed": args.seed, "duration_s": saturation_s, "levels": []}
        for clients in levels:
            log(f"load test, saturation (no think time): {clients} clients for {saturation_s:.0f} s")
            level = run_level(base_url, creds, film, clients=clients, duration=saturation_s, seed=args.seed)
            portal["load_saturation"]["levels"].append(level)
            time.sleep(2.0)
        portal["studies_after"] = _count_studies()
        portal["worker_log_errors"] = [line for line in worker.log_text().splitlines() if "ERROR" in line][:5]
    finally:
        web.stop()
        worker.stop()
    log("list queries: pages in process, JIT on/off")
    queries_path = WORKDIR / "queries.json"
    subprocess.run(  # noqa: S603 - our interpreter and module
        [sys.executable, "-m", "benchmarks.queries", "--runs", "5" if args.quick else "15", "--out", str(queries_path)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    portal["queries"] = json.loads(queries_path.read_text())
    return portal


def _count_studies() -> dict[str, int]:
    connection = database_connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT status, count(*) FROM diagnostics_study GROUP BY status")
            return {status: int(count) for status, count in cursor.fetchall()}
    finally:
        connection.close()


if __name__ == "__main__":
    sys.exit(main())
