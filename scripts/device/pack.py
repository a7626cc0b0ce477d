"""On the GPU machine: pack the rows for the trip back (at most 8 files of 16 MiB: the device tool's limits).

Usage: python scripts/device/pack.py RUNS OUT [--exact NAME ...] [--fp16 NAME ...]
Each named row's weights travel exactly (in parts under 16 MiB) or as float16; manifests, logs and plots of
every row in runs.tar.gz. Model files of the rows not named (the large from-scratch ones) stay behind.
The defaults are the 2026-11-27 plan: the student exactly, the three teachers in float16.
"""

from __future__ import annotations

import argparse
import glob
import os
import tarfile
import tempfile
from pathlib import Path

import h5py
import keras
import numpy as np

PART_BYTES = 15 * 1024 * 1024


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--exact", nargs="*", default=["student"])
    parser.add_argument("--fp16", nargs="*", default=["teacher11", "teacher12", "teacher13"])
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp())
    for name in [*args.exact, *args.fp16]:
        found = glob.glob(f"{args.runs}/{name}/*/model.keras")
        if not found:
            print(name, "has no model.keras")
            continue
        weights = scratch / f"{name}.weights.h5"
        keras.saving.load_model(found[0], compile=False).save_weights(weights)
        if name in args.exact:
            data = weights.read_bytes()
            for i in range(0, len(data), PART_BYTES):
                (args.out / f"{name}.weights.h5.part{i // PART_BYTES}").write_bytes(data[i : i + PART_BYTES])
        else:
            to_float16(weights, args.out / f"{name}.fp16.weights.h5")
    skip = ("model.keras", ".weights.h5", "checkpoints")
    with tarfile.open(args.out / "runs.tar.gz", "w:gz") as tar:
        for path in sorted(args.runs.iterdir()):
            if not path.name.startswith("cache"):
                tar.add(path, arcname=path.name, filter=lambda info: None if info.name.endswith(skip) else info)
    for f in sorted(os.listdir(args.out)):
        print(f, (args.out / f).stat().st_size)


if __name__ == "__main__":
    main()
