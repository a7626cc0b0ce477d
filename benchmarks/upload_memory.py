"""python -m benchmarks.upload_memory: what each kind of file costs each process that reads it.

    python -m benchmarks.upload_memory [--paths validate,page,api,inspect,receiver,worker] [--only KIND,...]
                                       [--flood 20] [--json var/bench/upload_memory.json]

1. Peak memory per kind of file and path. It writes one file of each kind: the normal cases, the largest
   file each limit accepts, and the attacks (a JPEG 2000 DICOM whose header says 512x512 over a 16000x16000
   codestream, a deflated DICOM that inflates to 600 MB, a 65535x383 16-bit DICOM with rescale and window,
   a 16x1.57M 16-bit PNG, a 6900x6900 palette PNG, a PNG with a 40 MB EXIF chunk after its pixels). Then
   for each path it does, in a process of its own, what that process does with the file:
   - ``validate``: the upload check alone (services.images.image_validate_upload);
   - ``page`` and ``api``: a real request through Django's URL, middleware and view (the study form and
     POST /api/v1/studies/) on the benchmark's PostgreSQL database, with Django's test client;
   - ``inspect``: the inspect-dicom view (headers only), DICOM files only;
   - ``receiver``: the DICOM receiver (diagnostics.integrations.dicom_in) in a process of its own, sent
     each DICOM file with pynetdicom's C-STORE (from the file, as a PACS streams it);
   - ``worker``: the inference worker's path (ml.serving.inference.Predictor: decode, gate, tensor, model
     and heatmap), the bundled model loaded first.
   Each row is the process's peak RSS over the case minus its RSS just before (the peak is reset through
   /proc/PID/clear_refs first), so imports and the model count nowhere; the target is 512 MB. The page and
   API rows include the test client's own copy of the request body (at most the file's size).
2. ``--flood N``: the production stack on 127.0.0.1 (gunicorn as deployed, the inference worker, beat,
   PostgreSQL with 2,000 seeded studies, a Redis of its own). One API client keeps N uploads of the worst
   accepted files in flight for ``--flood-seconds`` (20; each posts again as soon as it is answered) while
   another user (a clinician, signed in) reloads the worklist; it prints the worklist's p50/p95 before and
   during the flood (target p95 <= 1 s), what the flood's requests were answered, and the peak RSS of every
   web process afterwards.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("BENCH_DATABASE_NAME", "portal_bench_flood")  # before benchmarks.env is imported

MEASURE = r"""
import os
from pathlib import Path


def rss_mb(pid="self", field="VmRSS:"):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return 0.0


def reset_peak(pid="self"):
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux 4.0+)
"""

CHILD = (
    MEASURE
    + r"""
import io, json, sys, time
path, mode, credentials = sys.argv[1], sys.argv[2], json.loads(sys.argv[3] or "{}")
data = Path(path).read_bytes()
name = Path(path).name
outcome = ""
if mode == "worker":
    from ml.serving.inference import Predictor
    from ml.serving.decode import ImageDecodeError
    predictor = Predictor.from_artifact(Path("ml/default_model"))
    warm = (Path("tests/fixtures/films/IM-0119-0001.jpeg")).read_bytes()
    gate, tensor = predictor.prepare(warm)
    predictor.predict_with_cam(tensor[None])

    def run():
        # The whole path whatever the input gate says (a synthetic film is not analysable): decode, gate,
        # the model's tensor, the model and its heatmap.
        try:
            decoded = predictor.decode(data)
        except ImageDecodeError as error:
            return "refused: " + str(error)
        gate = predictor.gate(decoded)
        prediction = predictor.predict_with_cam(predictor.tensor(decoded)[None])
        verdict = "analysable" if gate.passed else f"gate: {gate.code}"
        return f"assessed {float(prediction.probabilities[0]):.3f} ({verdict})"
else:
    import django
    django.setup()
    from django.test import Client
    from django.core.exceptions import ValidationError
    from diagnostics.models import User
    if mode == "validate":
        from diagnostics.services.images import image_validate_upload

        def run():
            try:
                upload = image_validate_upload(filename=name, data=data)
                return f"accepted {upload.width}x{upload.height} {upload.format}"
            except ValidationError as error:
                return "refused: " + " ".join(error.messages)
    else:
        from django.core.files.uploadedfile import SimpleUploadedFile
        from django.urls import reverse
        client = Client(HTTP_HOST="127.0.0.1")
        user = User.objects.get(username=credentials["username"])
        client.force_login(user)
        patient = credentials["patient_ids"][0]
        headers = {"HTTP_AUTHORIZATION": "Bearer " + credentials["api_token"]}

        def run():
            upload = SimpleUploadedFile(name, data)
            if mode == "page":
                response = client.post(reverse("study_new", args=[patient]), {"images": [upload], "modality": "CR"})
                if response.status_code == 302:
                    return "accepted (study stored)"
                text = response.content.decode(errors="replace")
                import html, re
                found = re.search(re.escape(name) + r": ([^<]+)<", text)
                return f"{response.status_code}: " + (html.unescape(found.group(1)) if found else text[:100])
            if mode == "api":
                client.logout()
                response = client.post("/api/v1/studies/", {"patient_id": patient, "images": [upload]}, **headers)
                client.force_login(user)
                if response.status_code in (200, 201, 202):
                    return f"{response.status_code}: accepted (study stored)"
                return f"{response.status_code}: " + response.content.decode(errors="replace")[:200]
            response = client.post(reverse("study_inspect_dicom", args=[patient]), {"images": [upload]})
            return f"{response.status_code}: " + ("header read" if b"error" not in response.content.lower()
                                                   else "refused with a reason")
reset_peak()
before = rss_mb()
started = time.perf_counter()
outcome = run()
seconds = time.perf_counter() - started
print(json.dumps({"before_mb": round(before), "peak_delta_mb": round(rss_mb(field="VmHWM:") - before),
                  "seconds": round(seconds, 2), "outcome": outcome[:160]}))
"""
)

RECEIVER = r"""
import sys, django
django.setup()
from diagnostics.integrations.dicom_in.receiver import DicomReceiver
DicomReceiver(port=int(sys.argv[1]), ae_title="PORTAL", host="127.0.0.1").start(block=True)
"""

PEER_SETUP = r"""
import json, sys, django
django.setup()
from diagnostics.models import DicomPeer, User
user = User.objects.get(username=sys.argv[1])
DicomPeer.objects.update_or_create(ae_title="BENCHPACS", defaults={
    "team": user.team, "service_user": user, "allowed_networks": "127.0.0.1/32", "enabled": True})
"""


def _noise(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any, high: int) -> np.ndarray:
    """Smooth noise: compresses like a film, not like static (the upload limit is 50 MB)."""
    small = rng.integers(0, high, size=tuple(max(1, s // 16) for s in shape[:2]) + shape[2:])
    return np.kron(small, np.ones((16, 16) + (1,) * (len(shape) - 2))).astype(dtype)[: shape[0], : shape[1]]


def _png(array: np.ndarray, mode: str | None = None, **params: Any) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, "PNG", **params)
    return buffer.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _dicom_compressed(data: bytes, syntax: str) -> bytes:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    ds.compress(syntax)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _deflate_bomb(base: bytes, inflated_mb: int) -> bytes:
    """A Deflated Explicit VR Little Endian file: a small film and a private OB element of `inflated_mb`
    zero megabytes after its pixel data, deflated in a stream (never held inflated here)."""
    import pydicom
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = pydicom.dcmread(io.BytesIO(base))
    body = io.BytesIO()
    ds.set_original_encoding(False, True)
    write_dataset(pydicom.filebase.DicomFileLike(body), ds)
    size = inflated_mb * 2**20
    bomb = struct.pack("<HH2sHI", 0x7FE1, 0x1000, b"OB", 0, size)
    creator = struct.pack("<HH2sH", 0x7FE1, 0x0010, b"LO", 4) + b"BOMB"
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [deflater.compress(body.getvalue() + creator + bomb)]
    zeros = bytes(2**20)
    for _ in range(inflated_mb):
        out.append(deflater.compress(zeros))
    out.append(deflater.flush())
    meta = ds.file_meta
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    head = io.BytesIO()
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(pydicom.filebase.DicomFileLike(head), meta)
    return head.getvalue() + b"".join(out)


def test_files(folder: Path) -> dict[str, Path]:
    """One file of each kind (see the module's docstring)."""
    from PIL import Image
    from pydicom.uid import generate_uid

    from ml.serving.codestream import J2K_MAGIC
    from ml.serving.decode import MAX_DECODED_BYTES
    from ml.training import nonchest

    rng = np.random.default_rng(0)
    files: dict[str, Path] = {}
    # What a PACS's film carries, so that the receiver files the honest ones (a study per file).
    ids = {"PatientID": "BENCH-MEMORY", "PatientBirthDate": "20200101"}

    def dicom_file(pixels: np.ndarray, *, bits_stored: int, **tags: Any) -> bytes:
        tags = {"StudyInstanceUID": generate_uid(), **ids, **tags}
        return nonchest.dicom_file(pixels, bits_stored=bits_stored, **tags)

    def side(bytes_per_pixel: int) -> int:
        return int((MAX_DECODED_BYTES / bytes_per_pixel) ** 0.5) - 16

    def save(name: str, data: bytes) -> None:
        files[name] = folder / name
        files[name].write_bytes(data)

    def jpeg(array: np.ndarray, mode: str) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(array, mode).save(buffer, "JPEG", quality=90)
        return buffer.getvalue()

    # Normal films.
    save("normal-jpeg.jpg", jpeg(_noise(rng, (2000, 1700), np.uint8, 255), "L"))
    normal_dicom = dicom_file(_noise(rng, (2500, 2048), np.uint16, 4095), bits_stored=12, Modality="CR")
    save("normal-dicom.dcm", normal_dicom)
    save("normal-dicom-j2k.dcm", _dicom_compressed(normal_dicom, "1.2.840.10008.1.2.4.90"))
    # The largest each limit accepts.
    s = min(side(1), 7700)
    save("largest-jpeg-gray.jpg", jpeg(_noise(rng, (s, s), np.uint8, 255), "L"))
    s = side(2)
    save("largest-png-gray16.png", _png(_noise(rng, (s, s), np.uint16, 32767)))
    s = side(4)
    save("largest-png-rgb.png", _png(_noise(rng, (s, s, 3), np.uint8, 255), "RGB"))
    s = side(2)
    window: dict[str, object] = {
        "RescaleSlope": "0.5",
        "RescaleIntercept": "-1024",
        "WindowCenter": "500",
        "WindowWidth": "1500",
    }
    save("largest-dicom-16bit-rescale-window.dcm",
         dicom_file(_noise(rng, (s, s), np.uint16, 32767), bits_stored=16, Modality="CR", **window))  # fmt: skip
    # The attacks.
    small = dicom_file(_noise(rng, (512, 512), np.uint16, 4095), bits_stored=12, Modality="CR")
    j2k = bytearray(_dicom_compressed(small, "1.2.840.10008.1.2.4.90"))
    at = j2k.index(J2K_MAGIC)
    j2k[at + 8 : at + 16] = struct.pack(">II", 16000, 16000)  # SIZ's Xsiz, Ysiz; the header keeps 512x512
    save("attack-j2k-header-512-codestream-16000.dcm", bytes(j2k))
    save("attack-deflate-bomb-600mb.dcm", _deflate_bomb(small, 600))
    save("attack-dicom-65535x383-16bit-rescale-window.dcm",
         dicom_file(_noise(rng, (65535, 383), np.uint16, 32767), bits_stored=16, Modality="CR", **window))  # fmt: skip
    save("attack-png-16x1570000-16bit.png", _png(_noise(rng, (1_570_000, 16), np.uint16, 32767)))
    palette = Image.fromarray(_noise(rng, (6900, 6900), np.uint8, 255), "L").convert("P")
    buffer = io.BytesIO()
    palette.save(buffer, "PNG")
    save("attack-png-palette-6900.png", buffer.getvalue())
    exif = Image.Exif()
    exif[0x0112] = 6
    film = _png(_noise(rng, (2000, 1700), np.uint8, 255), "L")
    big_exif = exif.tobytes() + bytes(40 * 2**20)
    save("attack-png-40mb-exif-after-pixels.png", film[:-12] + _png_chunk(b"eXIf", big_exif) + film[-12:])
    s = side(2) + 64
    over = _noise(rng, (s, s), np.uint16, 4095)
    save("attack-dicom-over-budget.dcm", dicom_file(over, bits_stored=12, Modality="CR"))
    return files


def _child_env() -> dict[str, str]:
    from benchmarks import env as bench

    return bench.bench_env()


def run_child(path: Path, mode: str, credentials: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    completed = subprocess.run(  # noqa: S603 - our interpreter and the script above
        [sys.executable, "-c", CHILD, str(path), mode, json.dumps(credentials)],
        cwd=ROOT, capture_output=True, text=True, check=False, env=env, timeout=900,
    )  # fmt: skip
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        return {"peak_delta_mb": None, "outcome": f"process failed ({completed.returncode}): {completed.stderr[-300:]}"}
    found: dict[str, Any] = json.loads(lines[-1])
    return found


def receiver_rows(files: dict[str, Path], credentials: dict[str, Any], env: dict[str, str]) -> list[dict[str, Any]]:
    """Each DICOM file sent by C-STORE to one receiver process; its peak reset before each."""
    from pydicom.filereader import read_file_meta_info
    from pynetdicom import AE, StoragePresentationContexts

    from benchmarks.env import free_port

    setup = [sys.executable, "-c", PEER_SETUP, credentials["username"]]
    subprocess.run(setup, cwd=ROOT, env=env, check=True)  # noqa: S603 - our interpreter and the script above
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", RECEIVER, str(port)], cwd=ROOT, env=env)  # noqa: S603
    namespace: dict[str, Any] = {}
    exec(MEASURE, namespace)  # noqa: S102 - the same two helpers the children use
    rows = []
    try:
        ae = AE(ae_title="BENCHPACS")
        ae.requested_contexts = StoragePresentationContexts[:120]
        deadline = time.time() + 60
        while True:
            assoc = ae.associate("127.0.0.1", port, ae_title="PORTAL")
            if assoc.is_established or time.time() > deadline:
                break
            time.sleep(0.5)
        assoc.release()
        for kind, path in files.items():
            if path.suffix != ".dcm":
                continue
            meta = read_file_meta_info(path)  # the file meta only: the dataset itself is never read here
            ae.requested_contexts = []
            ae.add_requested_context(meta.MediaStorageSOPClassUID, [meta.TransferSyntaxUID])
            namespace["reset_peak"](process.pid)
            before = namespace["rss_mb"](process.pid)
            started = time.perf_counter()
            assoc = ae.associate("127.0.0.1", port, ae_title="PORTAL")
            if not assoc.is_established:
                outcome = "association refused"
            else:
                status = assoc.send_c_store(path)
                code = getattr(status, "Status", None)
                comment = getattr(status, "ErrorComment", "")
                outcome = "no response (aborted)" if code is None else (
                    "stored" if code == 0 else f"refused 0x{int(code):04X}: {comment}")  # fmt: skip
                if assoc.is_established:
                    assoc.release()
            time.sleep(0.3)
            peak = namespace["rss_mb"](process.pid, "VmHWM:")
            row = {"file": kind, "path": "receiver", "file_mb": round(path.stat().st_size / 1e6, 1),
                   "before_mb": round(before), "seconds": round(time.perf_counter() - started, 2),
                   "peak_delta_mb": round(peak - before), "outcome": outcome}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return rows


def peak_rss(files: dict[str, Path], paths: list[str]) -> list[dict[str, Any]]:
    from benchmarks import env as bench

    env = _child_env()
    credentials: dict[str, Any] = {}
    if set(paths) & {"page", "api", "inspect", "receiver"}:
        film = ROOT / "tests" / "fixtures" / "films" / "IM-0119-0001.jpeg"
        credentials = bench.seeded_database(film=film, studies=1, patients=2, env=env)
    rows = []
    for mode in paths:
        if mode == "receiver":
            rows.extend(receiver_rows(files, credentials, env))
            continue
        for kind, path in files.items():
            if mode == "inspect" and path.suffix != ".dcm":
                continue
            row = {"file": kind, "path": mode, "file_mb": round(path.stat().st_size / 1e6, 1),
                   **run_child(path, mode, credentials, env)}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    memory = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    return f"{os.cpu_count()} vCPU {cpu}, {memory} GB, Python {platform.python_version()}, {platform.system()}"


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
    parser.add_argument("--paths", default="validate,page,api,inspect,receiver,worker",
                        help="which processes read the files (comma-separated)")  # fmt: skip
    parser.add_argument("--only", default="", help="only the kinds whose name contains one of these words")
    parser.add_argument("--flood", type=int, default=0, help="also post this many worst files at once (20)")
    parser.add_argument("--flood-seconds", type=float, default=20.0, help="and keep them coming this long")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"machine": machine()}
    print(result["machine"], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        files = test_files(Path(tmp))
        if args.only:
            words = args.only.split(",")
            files = {kind: path for kind, path in files.items() if any(word in kind for word in words)}
        result["peak_rss"] = peak_rss(files, [path for path in args.paths.split(",") if path])
        worst = [row["peak_delta_mb"] or 0 for row in result["peak_rss"]]
        print(f"largest peak increase: {max(worst, default=0)} MB (target 512 MB)", flush=True)
        if args.flood:
            accepted = {kind: path for kind, path in files.items() if kind.startswith(("normal", "largest"))}
            result["flood"] = flood(accepted, args.flood, args.flood_seconds)
            print(json.dumps(result["flood"]), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
