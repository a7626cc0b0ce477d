"""Here, with TensorFlow: rebuild each GPU row's model.keras from the weights that came back, then export
its ONNX (`python -m ml export`). Usage: PYTHONPATH=. python scripts/device/unpack.py <files back> <runs dir>
"""

from __future__ import annotations

import sys
import tarfile
import tempfile
from pathlib import Path

from ml.architectures import build_model
from ml.artifacts import KERAS_NAME, read_manifest
from ml.cli import main as ml_main


def main(back: Path, runs: Path) -> None:
    runs.mkdir(parents=True, exist_ok=True)
    with tarfile.open(back / "runs.tar.gz") as tar:
        tar.extractall(runs, filter="data")  # our own archive; "data" refuses links and absolute paths
    weights = {name: back / f"{name}.fp16.weights.h5" for name in ("teacher11", "teacher12", "teacher13")}
    parts = sorted(back.glob("student.weights.h5.part*"))
    if parts:
        weights["student"] = Path(tempfile.mkdtemp()) / "student.weights.h5"
        weights["student"].write_bytes(b"".join(p.read_bytes() for p in parts))
    for name, file in weights.items():
        artifacts = sorted((runs / name).glob("*/manifest.json"))
        if not artifacts or not file.exists():
            print(name, "missing")
            continue
        artifact = artifacts[0].parent
        manifest = read_manifest(artifact)
        built = build_model(
            manifest["architecture"], input_size=int(manifest["input_size"]), weights=None, seed=0, pretrained=True
        )
        built.model.load_weights(file)
        built.model.save(artifact / KERAS_NAME)
        ml_main(["export", "--artifact", str(artifact)])
        print(name, artifact, "exported")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
