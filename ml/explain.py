"""Grad-CAM heatmaps for the Keras model of an artifact: where the film raised P(PNEUMONIA).

Plain TensorFlow/Keras, no Django; imported only by the explain worker (lazily) and by tests,
never by the web app or the inference worker. The input is the same tensor serving uses
(``ml.preprocessing.load_for_model``), so the heatmap explains the prediction that was shown.

Grad-CAM (Selvaraju et al., 2017): weight each channel of the last convolutional feature map
by the spatial mean of the gradient of the log-odds of pneumonia with respect to it, sum, keep
the positive part and normalise to 0..1. The map covers the whole (squashed) model input, so
stretched over the displayed film it lines up with it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ml.artifacts import read_manifest, sha256_file
from ml.preprocessing import PREPROCESSING_VERSION, load_for_model

# Layers that turn the last feature map into a vector (ml.architectures names them so);
# their input is the map Grad-CAM weighs.
POOLING_LAYER_NAMES = ("pool", "flatten")


class ExplainerUnavailable(RuntimeError):
    """The artifact cannot be explained (no Keras file, tampered file, other preprocessing)."""


@dataclass(frozen=True)
class GradCamResult:
    cam: np.ndarray  # (h, w) float32 in 0..1, h and w those of the feature map
    probability: float  # the Keras model's P(PNEUMONIA) for the same input
    raw_max: float  # largest positive Grad-CAM value before normalising (0: no positive evidence)


class GradCamExplainer:
    """Grad-CAM for one Keras model; build once per process, call for every film."""

    def __init__(self, model: Any, *, input_size: int) -> None:
        import keras

        self.input_size = input_size
        feature_map = _last_feature_map(model)
        self._grad_model = keras.Model(model.inputs, [feature_map, model.outputs[0]])

    @classmethod
    def from_artifact(cls, artifact_dir: str | Path) -> GradCamExplainer:
        artifact_dir = Path(artifact_dir)
        try:
            manifest = read_manifest(artifact_dir)
        except (OSError, ValueError) as error:
            raise ExplainerUnavailable(f"The model manifest cannot be read: {error}") from None
        keras_name = manifest.get("files", {}).get("keras")
        if not keras_name:
            raise ExplainerUnavailable("The model artifact has no Keras file, so no heatmap can be computed.")
        if manifest["preprocessing_version"] != PREPROCESSING_VERSION:
            raise ExplainerUnavailable(
                f"The model was trained with preprocessing '{manifest['preprocessing_version']}', "
                f"this code implements '{PREPROCESSING_VERSION}'."
            )
        keras_path = artifact_dir / str(keras_name)
        if not keras_path.is_file():
            raise ExplainerUnavailable(f"The model's Keras file {keras_path.name} is missing from its artifact.")
        expected = manifest.get("keras_sha256")
        if expected and sha256_file(keras_path) != expected:
            raise ExplainerUnavailable(f"The Keras file {keras_path.name} does not match its manifest.")
        import keras

        model = keras.saving.load_model(keras_path, compile=False)
        return cls(model, input_size=int(manifest["input_size"]))

    def explain_tensor(self, image: np.ndarray) -> GradCamResult:
        """(S, S, 3) float32 from ml.preprocessing -> Grad-CAM of P(PNEUMONIA)."""
        import tensorflow as tf

        expected = (self.input_size, self.input_size, 3)
        if image.shape != expected:
            raise ValueError(f"expected an image of shape {expected}, got {image.shape}")
        batch = tf.convert_to_tensor(image[None, ...], dtype=tf.float32)
        with tf.GradientTape() as tape:
            feature_map, output = self._grad_model(batch, training=False)
            probability = tf.clip_by_value(output[:, 0], 1e-7, 1.0 - 1e-7)
            # Log-odds rather than the probability: the sigmoid's flat tails would starve the gradient.
            log_odds = tf.math.log(probability) - tf.math.log1p(-probability)
        gradients = tape.gradient(log_odds, feature_map)
        weights = tf.reduce_mean(gradients, axis=(1, 2))  # (1, channels)
        cam = tf.nn.relu(tf.reduce_sum(feature_map * weights[:, None, None, :], axis=-1))[0].numpy()
        raw_max = float(cam.max())
        normalised = cam / raw_max if raw_max > 0 else np.zeros_like(cam)
        return GradCamResult(
            cam=normalised.astype(np.float32), probability=float(output.numpy()[0, 0]), raw_max=raw_max
        )

    def explain_bytes(self, data: bytes) -> GradCamResult:
        """Grad-CAM for an uploaded file, through the serving preprocessing."""
        return self.explain_tensor(load_for_model(data, input_size=self.input_size))


def _last_feature_map(model: Any) -> Any:
    """The 4-D tensor the pooling layer reduces: the last convolutional feature map."""
    for name in POOLING_LAYER_NAMES:
        try:
            layer = model.get_layer(name)
        except ValueError:
            continue
        if len(layer.input.shape) == 4:
            return layer.input
    for layer in reversed(model.layers):
        if len(layer.output.shape) == 4:
            return layer.output
    raise ExplainerUnavailable(f"Model {model.name} has no convolutional feature map to explain.")


# Colour ramp (position, RGB): transparent dark blue through cyan and yellow to red.
_RAMP = np.array(
    [
        (0.00, 0, 0, 130),
        (0.25, 0, 120, 255),
        (0.50, 0, 220, 200),
        (0.75, 255, 220, 0),
        (1.00, 220, 20, 20),
    ],
    dtype=np.float32,
)


def colourise(cam: np.ndarray, *, width: int, height: int) -> np.ndarray:
    """A 0..1 map -> (height, width, 4) uint8 RGBA; weak regions are more transparent."""
    upscaled = Image.fromarray(np.clip(cam * 255.0, 0, 255).astype(np.uint8)).resize(
        (width, height), Image.Resampling.BICUBIC
    )
    values = np.asarray(upscaled, dtype=np.float32) / 255.0
    rgba = np.empty((height, width, 4), dtype=np.uint8)
    for channel in range(3):
        rgba[..., channel] = np.interp(values, _RAMP[:, 0], _RAMP[:, channel + 1]).astype(np.uint8)
    # Opaque where the evidence is strong and clear where there is none, so the film shows through
    # and a map without positive evidence is blank rather than a uniform tint.
    rgba[..., 3] = np.clip(values * 1.6, 0.0, 1.0) * 220
    return rgba


def heatmap_png(cam: np.ndarray, *, width: int, height: int) -> bytes:
    """The colourised heatmap as a PNG of the displayed film's size."""
    buffer = io.BytesIO()
    Image.fromarray(colourise(cam, width=width, height=height)).save(buffer, format="PNG")
    return buffer.getvalue()
