"""An artifact's trained Keras network and Platt scaling folded into its final layer.

Every model here ends in Dense(1, sigmoid) named ``FINAL_LAYER``, whose logit is z = w.h + c, so Platt
scaling sigmoid(a * z + b) folds into that layer exactly (w' = a w, c' = a c + b; ``ml.training.calibration``
fits a and b). Evaluation, distillation and warm starts read the network as trained through
``load_trained_network``, with any folded scaling taken back out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ml.serving import artifacts

FINAL_LAYER = "pneumonia"  # ml.training.architectures._head_layers: Dense(1, sigmoid)


def fold_platt(model: Any, a: float, b: float) -> None:
    """Put sigmoid(a * logit + b) into the final Dense layer: its logit z becomes a * z + b."""
    layer = model.get_layer(FINAL_LAYER)
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel * a, bias * a + b])


def unfold_platt(model: Any, a: float, b: float) -> None:
    """Take folded Platt scaling back out of the final layer: the trained network (a warm start)."""
    layer = model.get_layer(FINAL_LAYER)
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel / a, (bias - b) / a])


def load_trained_network(artifact_dir: str | Path) -> Any:
    """An artifact's model.keras with any folded Platt scaling taken back out: the network as trained,
    for a warm start or a teacher's targets (never train on anything fitted on external/)."""
    import keras

    model = keras.saving.load_model(Path(artifact_dir) / artifacts.KERAS_NAME, compile=False)
    platt = artifacts.read_manifest(artifact_dir).get("calibration")
    if platt:
        unfold_platt(model, float(platt["a"]), float(platt["b"]))
    return model
