"""Heatmaps from a model's class activation map: where the film pointed the model towards pneumonia.

The map is the ONNX graph's ``cam`` output (ml/export.py), computed with the probability by the same
ONNX Runtime call: the logit of P(PNEUMONIA) at each location of the last feature map. Plain NumPy and
Pillow, no TensorFlow and no Django: the inference worker draws the heatmap, and so does the web
process in the embedded mode. The map covers the whole (squashed) model input, so stretched over the
displayed film it lines up with it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

# The map's mean must give back the probability shown (ml/export.py): otherwise it explains something else.
CAM_PROBABILITY_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Evidence:
    map: np.ndarray  # (h, w) float32 in 0..1: the positive part of the map over its largest value
    raw_max: float  # that largest per-location logit; 0.0: no location points towards pneumonia


def positive_evidence(cam: np.ndarray) -> Evidence:
    """Keep the locations whose logit favours pneumonia, scaled to 0..1 (all zero when there is none)."""
    positive = np.maximum(np.asarray(cam, dtype=np.float32), 0.0)
    raw_max = float(positive.max())
    normalised = positive / raw_max if raw_max > 0 else np.zeros_like(positive)
    return Evidence(normalised.astype(np.float32), raw_max)


def cam_matches_probability(
    cam: np.ndarray, probability: float, *, tolerance: float = CAM_PROBABILITY_TOLERANCE
) -> bool:
    """Whether the map's spatial mean, through the sigmoid, is the probability it came with."""
    mean_logit = float(np.mean(np.asarray(cam, dtype=np.float64)))
    return abs(1.0 / (1.0 + np.exp(-mean_logit)) - probability) <= tolerance


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
    """The colourised 0..1 map as a PNG of the displayed film's size."""
    buffer = io.BytesIO()
    # Drawn in the inference step for every film: zlib level 1 encodes about 4x faster than Pillow's
    # default 6 for files about a third larger.
    Image.fromarray(colourise(cam, width=width, height=height)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
