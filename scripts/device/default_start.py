"""The warm start PLAN=converge carries to the GPU machine (docs/gpu.md): the bundled default's weights with
its Platt scaling taken out of the final layer (the trained network itself), stored as float16 to fit the
64 MiB a call carries. Usage, with TensorFlow or PyTorch Keras:

    PYTHONPATH=. python scripts/device/default_start.py ml/default_model var/device/default_fp16.weights.h5
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from ml.serving.artifacts import read_manifest
from ml.training.networks import load_trained_network
from scripts.device.pack import to_float16


def main(artifact: Path, target: Path) -> None:
    calibrated = "calibration" in read_manifest(artifact)
    model = load_trained_network(artifact)
    weights = Path(tempfile.mkdtemp()) / "start.weights.h5"
    model.save_weights(weights)
    target.parent.mkdir(parents=True, exist_ok=True)
    to_float16(weights, target)
    print(target, target.stat().st_size, "bytes;", "Platt scaling taken out" if calibrated else "not calibrated")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
