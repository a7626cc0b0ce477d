"""python -m benchmarks.upload_memory: what the worst accepted file of each kind costs a web process.

    python -m benchmarks.upload_memory [--flood 20] [--json var/bench/upload_memory.json]

1. Peak memory. For each kind (JPEG gray and colour, PNG 16-bit gray and colour, DICOM 16-bit) it writes
   the largest file the limits accept (ml.serving.decode.MAX_DECODED_BYTES, MAX_PIXELS, UPLOAD_MAX_BYTES),
   then, in a fresh process with Django loaded, does what a web worker does with it: the upload check,
   which decodes it once and makes its derivatives (services.images.image_validate_upload), and a
   preview and a window/level rendering from those derivatives (what every later view reads). It prints
   the process's peak RSS (VmHWM); the target is 512 MB. One file over the budget shows the refusal.
2. ``--flood N``: the production stack on 127.0.0.1 (gunicorn as deployed, the inference worker, beat,
   PostgreSQL with 2,000 seeded studies, a Redis of its own). One API client keeps N uploads of those
   worst files in flight for ``--flood-seconds`` (20; each posts again as soon as it is answered) while
   another user (a clinician, signed in) reloads the worklist; it prints the
   worklist's p50/p95 before and during the flood (target p95 <= 1 s), what the flood's requests were
   answered, and the peak RSS of every web process afterwards.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("BENCH_DATABASE_NAME", "portal_bench_flood")  # before benchmarks.env is imported

CHILD = r"""
import io, json, sys, time
import django


def peak_mb():
    # VmHWM: this process's own peak (getrusage's ru_maxrss starts from the parent's after fork)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

django.setup()
import numpy as np
from PIL import Image
from django.core.exceptions import ValidationError
from diagnostics.services.images import image_validate_upload
from ml.serving.decode import apply_display_window
data = open(sys.argv[1], "rb").read()
baseline = peak_mb()
started = time.perf_counter()
try:
    upload = image_validate_upload(filename=sys.argv[1], data=data)
    outcome = f"accepted {upload.width}x{upload.height} {upload.format}"
    # What the preview and window/level views read afterwards (services.reports.image_display_pixels).
    Image.open(io.BytesIO(upload.derivatives.preview_jpeg)).load()
    if upload.derivatives.window_source_png:
        source = np.asarray(Image.open(io.BytesIO(upload.derivatives.window_source_png)), dtype=np.uint16)
        apply_display_window(source, centre=40.0, width=20.0)
except ValidationError as error:
    outcome = "refused: " + " ".join(error.messages)[:120]
seconds = time.perf_counter() - started
peak = peak_mb()
print(json.dumps({"baseline_mb": round(baseline), "peak_mb": round(peak), "seconds": round(seconds, 2),
                  "outcome": outcome}))
"""


def worst_files(folder: Path) -> dict[str, Path]:
    """The largest files of each kind the decode budget (48 MB decoded) accepts, and one just over it."""
    from PIL import Image

    from ml.serving.decode import MAX_DECODED_BYTES
    from ml.training.nonchest import dicom_file

    rng = np.random.default_rng(0)
    files: dict[str, Path] = {}

    def side(bytes_per_pixel: int) -> int:
        return int((MAX_DECODED_BYTES / bytes_per_pixel) ** 0.5) - 16

    def save(name: str, data: bytes) -> None:
        files[name] = folder / name
        files[name].write_bytes(data)

    def noise(shape: tuple[int, ...], dtype: type) -> np.ndarray:
        # smooth noise: compresses like a film, not like static (the upload limit is 50 MB)
        small = rng.integers(0, np.iinfo(dtype).max // 2, size=tuple(max(1, s // 16) for s in shape[:2]) + shape[2:])
        return np.kron(small, np.ones((16, 16) + (1,) * (len(shape) - 2))).astype(dtype)[: shape[0], : shape[1]]

    for name, mode, bpp in (("jpeg-gray.jpg", "L", 1), ("jpeg-rgb.jpg", "RGB", 3)):
        s = min(side(bpp), 7700)
        buffer = io.BytesIO()
        Image.fromarray(noise((s, s) if bpp == 1 else (s, s, 3), np.uint8), mode).save(buffer, "JPEG", quality=90)
        save(name, buffer.getvalue())
    s = side(2)
    buffer = io.BytesIO()
    Image.fromarray(noise((s, s), np.uint16)).save(buffer, "PNG")
    save("png-gray16.png", buffer.getvalue())
    s = side(3)
    buffer = io.BytesIO()
    Image.fromarray(noise((s, s, 3), np.uint8), "RGB").save(buffer, "PNG")
    save("png-rgb.png", buffer.getvalue())
    s = side(2)
    save("dicom-16bit.dcm", dicom_file(noise((s, s), np.uint16), bits_stored=16, Modality="CR"))
    s = side(2) + 64  # just over the budget: refused before decoding
    save("dicom-over-budget.dcm", dicom_file(noise((s, s), np.uint16), bits_stored=16, Modality="CR"))
    return files


def peak_rss(files: dict[str, Path]) -> list[dict[str, Any]]:
    rows = []
    for kind, path in files.items():
        env_settings = {"DJANGO_SETTINGS_MODULE": "portal.settings.base"}
        completed = subprocess.run(  # noqa: S603 - our interpreter and the script above
            [sys.executable, "-c", CHILD, str(path)], cwd=ROOT, capture_output=True, text=True, check=True,
            env={**os.environ, **env_settings},
        )  # fmt: skip
        row = {"file": kind, "file_mb": round(path.stat().st_size / 1e6, 1), **json.loads(completed.stdout)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


CONTENT_TYPES = {".jpg": "image/jpeg", ".png": "image/png", ".dcm": "application/dicom"}


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def flood(files: dict[str, Path], requests_count: int, seconds: float) -> dict[str, Any]:
    """The worklist of one user while another keeps `requests_count` uploads of the worst files in flight
    for `seconds` (each client posts again as soon as it is answered, Retry-After or not)."""
    import requests

    from benchmarks import env as bench
    from benchmarks.faults import Redis, Stack, log
    from benchmarks.loadtest import Client

    film_path = ROOT / "tests" / "fixtures" / "films" / "IM-0119-0001.jpeg"
    broker = Redis(persistent=False)
    broker.start()
    stack = Stack(broker.url)
    creds = bench.seeded_database(film=film_path, studies=2000, patients=200, env=stack.env)
    kinds = list(files.items())
    try:
        stack.start()
        reader = Client(stack.base_url, creds, film_path.read_bytes(), seed=1)
        reader.login()

        def worklist() -> float:
            started = time.perf_counter()
            response = reader.web.get(f"{stack.base_url}/", timeout=120)
            assert response.status_code == 200, response.status_code
            return time.perf_counter() - started

        for _ in range(5):  # warm every web process
            worklist()
        before = [worklist() for _ in range(30)]
        log(f"flood: {requests_count} uploads of the worst files at once, again and again for {seconds:.0f} s")
        answers: list[tuple[str, int, float]] = []

        def post(index: int) -> None:
            while time.perf_counter() < flood_ends:
                post_once(index)

        def post_once(index: int) -> None:
            kind, path = kinds[index % len(kinds)]
            started = time.perf_counter()
            try:
                response = requests.post(
                    f"{stack.base_url}/api/v1/studies/",
                    headers={"Authorization": f"Bearer {creds['api_token']}"},
                    data={"patient_id": creds["patient_ids"][index % len(creds["patient_ids"])]},
                    files={"images": (path.name, path.read_bytes(), CONTENT_TYPES[path.suffix])},
                    timeout=300,
                )
                status = response.status_code
            except requests.RequestException:
                status = 0
            answers.append((kind, status, time.perf_counter() - started))

        threads = [threading.Thread(target=post, args=(index,)) for index in range(requests_count)]
        flood_started = time.perf_counter()
        flood_ends = flood_started + seconds
        for thread in threads:
            thread.start()
        during = []
        while any(thread.is_alive() for thread in threads):
            during.append(worklist())
        flood_seconds = time.perf_counter() - flood_started
        web_peaks = sorted(round(_vm_hwm_mb(pid)) for pid in stack.web.child_pids())
    finally:
        stack.stop()
        broker.kill()
    statuses: dict[str, int] = {}
    for _, status, _ in answers:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "flood_clients": requests_count,
        "flood_requests": len(answers),
        "flood_seconds": round(flood_seconds, 1),
        "flood_answers": statuses,
        "flood_answer_seconds_median": round(_percentile([a[2] for a in answers], 0.5), 2),
        "worklist_before_ms": {"n": len(before), "p50": round(_percentile(before, 0.5) * 1000),
                               "p95": round(_percentile(before, 0.95) * 1000)},
        "worklist_during_ms": {"n": len(during), "p50": round(_percentile(during, 0.5) * 1000),
                               "p95": round(_percentile(during, 0.95) * 1000),
                               "max": round(max(during) * 1000)},
        "web_process_peak_rss_mb": web_peaks,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.upload_memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--flood", type=int, default=0, help="also post this many worst files at once (20)")
    parser.add_argument("--flood-seconds", type=float, default=20.0, help="and keep them coming this long")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = worst_files(Path(tmp))
        result["peak_rss"] = peak_rss(files)
        if args.flood:
            accepted = {kind: path for kind, path in files.items() if "over-budget" not in kind}
            result["flood"] = flood(accepted, args.flood, args.flood_seconds)
            print(json.dumps(result["flood"]), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
