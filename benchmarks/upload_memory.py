"""python -m benchmarks.upload_memory: peak memory of a web process for the worst file of each kind.

For each kind (JPEG gray and colour, PNG 16-bit gray and colour, DICOM 16-bit uncompressed and
RLE-compressed colour) it writes the largest file the limits accept (ml.preprocessing.MAX_DECODED_BYTES,
MAX_PIXELS, UPLOAD_MAX_BYTES), then, in a fresh process with Django loaded, does what a web worker does
with it: the upload check (services.images.image_validate_upload) and the film preview
(services.reports.image_display_pixels's decode at 1,024 px). It prints the process's peak RSS before
and after (VmHWM), so the figure is the worst a single request can cost; the target is
512 MB. One file over the budget shows the refusal instead.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import io, json, sys, time
import django


def peak_mb():
    # VmHWM: this process's own peak (getrusage's ru_maxrss starts from the parent's after fork)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

django.setup()
from django.core.exceptions import ValidationError
from diagnostics.services.images import image_validate_upload
from diagnostics.services.reports import PREVIEW_SIZE
from ml.preprocessing import decode_image_bytes
data = open(sys.argv[1], "rb").read()
baseline = peak_mb()
started = time.perf_counter()
try:
    upload = image_validate_upload(filename=sys.argv[1], data=data)
    outcome = f"accepted {upload.decoded.width}x{upload.decoded.height} {upload.decoded.format}"
    decode_image_bytes(data, target_size=PREVIEW_SIZE)
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

    from ml.nonchest import dicom_file
    from ml.preprocessing import MAX_DECODED_BYTES

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.upload_memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, path in worst_files(Path(tmp)).items():
            env_settings = {"DJANGO_SETTINGS_MODULE": "portal.settings.base"}
            completed = subprocess.run(  # noqa: S603 - our interpreter and the script above
                [sys.executable, "-c", CHILD, str(path)], cwd=ROOT, capture_output=True, text=True, check=True,
                env={**__import__("os").environ, **env_settings},
            )  # fmt: skip
            row = {"file": kind, "file_mb": round(path.stat().st_size / 1e6, 1), **json.loads(completed.stdout)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
