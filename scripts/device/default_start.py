"""The warm start PLAN=converge carries to the GPU machine (docs/gpu.md): the bundled default's weights with
its Platt scaling taken out of the final layer (the trained network itself), stored as float16 to fit the
64 MiB a call carries. Usage, with TensorFlow or PyTorch Keras:

    PYTHONPATH=. python scripts/device/default_start.py ml/default_model var/device/default_fp16.weights.h5
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import keras

from ml.artifacts import KERAS_NAME, read_manifest
from ml.calibration import unfold_platt
from scripts.device.pack import to_float16


def main(artifact: Path, target: Path) -> None:
    manifest = read_manifest(artifact)
    model = keras.saving.load_model(artifact / KERAS_NAME, compile=False)
    calibration = manifest.get("calibration")
    if calibration:
        unfold_platt(model, float(calibration["a"]), float(calibration["b"]))
    weights = Path(tempfile.mkdtemp()) / "start.weights.h5"
    model.save_weights(weights)
    target.parent.mkdir(parents=True, exist_ok=True)
    to_float16(weights, target)
    print(target, target.stat().st_size, "bytes;", "Platt scaling taken out" if calibration else "not calibrated")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
