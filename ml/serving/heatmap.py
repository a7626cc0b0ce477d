"""Heatmaps from a model's class activation map: where the film pointed the model towards pneumonia.

The map is the ONNX graph's ``cam`` output (ml/training/export.py), computed with the probability by the same
ONNX Runtime call: the logit of P(PNEUMONIA) at each location of the last feature map. Plain NumPy and
Pillow, no TensorFlow and no Django: the inference worker draws the heatmap, and so does the web
process in the embedded mode. The map covers the (squashed) model input, or the part of it inside a
pooling margin (the manifest's ``heatmap.extent``: ml/training/export.py), so stretched over that part of the
displayed film it lines up with it; outside it the heatmap is clear.

``evidence_placement`` measures where a drawn map puts its strong evidence (the outer frame of the film or
inside it): the check that the heatmap shows the film's content, not its edges (docs/generalisation.md).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ml.serving.artifacts import FULL_EXTENT

# The map's mean must give back the probability shown (ml/training/export.py): otherwise it explains something else.
CAM_PROBABILITY_TOLERANCE = 1e-3
# The placement check: the film's outer frame (this fraction of its width and height on each side), and
# "strong" evidence, values at least this share of the map's largest.
FRAME_FRACTION = 0.10
STRONG_EVIDENCE = 0.5


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


def evidence_over_film(
    cam: np.ndarray, *, width: int, height: int, extent: tuple[float, ...] | list[float] = FULL_EXTENT
) -> np.ndarray:
    """A 0..1 map stretched (bicubic) over its extent of a width x height film, zero outside: what is drawn."""
    sides = (height, width, height, width)
    top, left, bottom, right = (round(edge * side) for edge, side in zip(extent, sides, strict=True))
    box_width, box_height = max(1, right - left), max(1, bottom - top)
    upscaled = Image.fromarray(np.clip(cam * 255.0, 0, 255).astype(np.uint8)).resize(
        (box_width, box_height), Image.Resampling.BICUBIC
    )
    values = np.zeros((height, width), dtype=np.float32)
    values[top : top + box_height, left : left + box_width] = np.asarray(upscaled, dtype=np.float32) / 255.0
    return values


@dataclass(frozen=True)
class Placement:
    strong_in_frame: float  # the strong evidence's weight (sum of its values) in the film's outer frame
    strong_total: float  # and on the whole film
    hottest_inside: bool  # the drawn map's largest value lies inside the frame (the film's central box)

    @property
    def frame_share(self) -> float:
        return self.strong_in_frame / self.strong_total if self.strong_total > 0 else 0.0


def evidence_placement(
    values: np.ndarray, *, frame: float = FRAME_FRACTION, strong: float = STRONG_EVIDENCE
) -> Placement:
    """Where a drawn (height, width) 0..1 map puts its evidence; a blank map has none anywhere."""
    height, width = values.shape
    rows, cols = max(1, round(frame * height)), max(1, round(frame * width))
    in_frame = np.ones_like(values, dtype=bool)
    in_frame[rows : height - rows, cols : width - cols] = False
    strong_values = np.where(values >= strong, values, 0.0)
    total = float(strong_values.sum())
    hottest = np.unravel_index(int(np.argmax(values)), values.shape)
    return Placement(float(strong_values[in_frame].sum()), total, total > 0 and not bool(in_frame[hottest]))


def colourise(
    cam: np.ndarray, *, width: int, height: int, extent: tuple[float, ...] | list[float] = FULL_EXTENT
) -> np.ndarray:
    """A 0..1 map -> (height, width, 4) uint8 RGBA over its extent; weak regions are more transparent."""
    values = evidence_over_film(cam, width=width, height=height, extent=extent)
    rgba = np.empty((height, width, 4), dtype=np.uint8)
    for channel in range(3):
        rgba[..., channel] = np.interp(values, _RAMP[:, 0], _RAMP[:, channel + 1]).astype(np.uint8)
    # Opaque where the evidence is strong and clear where there is none, so the film shows through
    # and a map without positive evidence is blank rather than a uniform tint.
    rgba[..., 3] = np.clip(values * 1.6, 0.0, 1.0) * 220
    return rgba


def heatmap_png(
    cam: np.ndarray, *, width: int, height: int, extent: tuple[float, ...] | list[float] = FULL_EXTENT
) -> bytes:
    """The colourised 0..1 map as a PNG of the displayed film's size, drawn over the map's extent."""
    buffer = io.BytesIO()
    # Drawn in the inference step for every film: zlib level 1 encodes about 4x faster than Pillow's
    # default 6 for files about a third larger.
    rgba = colourise(cam, width=width, height=height, extent=extent)
    Image.fromarray(rgba).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
