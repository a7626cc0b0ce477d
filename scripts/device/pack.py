"""On the GPU machine: pack the rows for the trip back (at most 8 files of 16 MiB: the device tool's limits).

The teachers' weights travel as float16 (12 MB each), the student's exactly (in two parts); manifests,
logs and plots in runs.tar.gz. Model files of the from-scratch rows are too large and stay behind.
"""

from __future__ import annotations

import glob
import os
import sys
import tarfile
import tempfile
from pathlib import Path

import h5py
import keras
import numpy as np


def to_float16(source: Path, target: Path) -> None:
    with h5py.File(source) as src, h5py.File(target, "w") as dst:

        def copy(path: str, obj: h5py.Dataset | h5py.Group) -> None:
            if isinstance(obj, h5py.Dataset):
                value = obj[()]
                dst.create_dataset(path, data=value.astype(np.float16) if value.dtype == np.float32 else value)
            else:
                dst.require_group(path)
            dst[path].attrs.update(dict(obj.attrs))

        dst.attrs.update(dict(src.attrs))
        src.visititems(copy)


def main(runs: Path, out: Path) -> None:
    scratch = Path(tempfile.mkdtemp())
    for name in ("student", "teacher11", "teacher12", "teacher13"):
        found = glob.glob(f"{runs}/{name}/*/model.keras")
        if not found:
            continue
        weights = scratch / f"{name}.weights.h5"
        keras.saving.load_model(found[0], compile=False).save_weights(weights)
        if name == "student":  # the likely default: exact weights
            data = weights.read_bytes()
            half = len(data) // 2 + 1
            for i in range(2):
                (out / f"student.weights.h5.part{i}").write_bytes(data[i * half : (i + 1) * half])
        else:
            to_float16(weights, out / f"{name}.fp16.weights.h5")
    skip = ("model.keras", ".weights.h5", "checkpoints")
    with tarfile.open(out / "runs.tar.gz", "w:gz") as tar:
        for path in sorted(runs.iterdir()):
            if not path.name.startswith("cache"):
                tar.add(path, arcname=path.name, filter=lambda info: None if info.name.endswith(skip) else info)
    for f in sorted(os.listdir(out)):
        print(f, (out / f).stat().st_size)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
