"""Here, with TensorFlow: rebuild each GPU row's model.keras from the weights that came back, then export
its ONNX (`python -m ml export`). Usage: PYTHONPATH=. python scripts/device/unpack.py <files back> <runs dir>
Weights come back as NAME.fp16.weights.h5 or as NAME.weights.h5.part0, part1, … (scripts/device/pack.py).
"""

from __future__ import annotations

import re
import sys
import tarfile
import tempfile
from pathlib import Path

from ml.cli import main as ml_main
from ml.serving.artifacts import KERAS_NAME, read_manifest
from ml.training.architectures import build_model


def returned_weights(back: Path) -> dict[str, Path]:
    weights = {f.name.removesuffix(".fp16.weights.h5"): f for f in back.glob("*.fp16.weights.h5")}
    parts: dict[str, list[tuple[int, Path]]] = {}
    for f in back.glob("*.weights.h5.part*"):
        name, index = re.fullmatch(r"(.+)\.weights\.h5\.part(\d+)", f.name).groups()  # type: ignore[union-attr]
        parts.setdefault(name, []).append((int(index), f))
    for name, numbered in parts.items():
        joined = Path(tempfile.mkdtemp()) / f"{name}.weights.h5"
        joined.write_bytes(b"".join(f.read_bytes() for _, f in sorted(numbered)))
        weights[name] = joined
    return weights


def main(back: Path, runs: Path) -> None:
    runs.mkdir(parents=True, exist_ok=True)
    with tarfile.open(back / "runs.tar.gz") as tar:
        tar.extractall(runs, filter="data")  # our own archive; "data" refuses links and absolute paths
    for name, file in sorted(returned_weights(back).items()):
        artifacts = sorted((runs / name).glob("*/manifest.json"))
        if not artifacts:
            print(name, "has weights but no artifact")
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
