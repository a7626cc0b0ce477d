"""Small X-ray-like images written in memory, so tests need no data files."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def chest_like_pixels(size: int = 256, seed: int = 0) -> np.ndarray:
    """A grayscale picture with two dark 'lungs' in a bright frame, plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    pixels = 200 - 120 * (np.exp(-((xx - 0.32) ** 2 + (yy - 0.5) ** 2) / 0.02))
    pixels -= 120 * np.exp(-((xx - 0.68) ** 2 + (yy - 0.5) ** 2) / 0.02)
    pixels += rng.normal(0, 8, pixels.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray, fmt: str, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def jpeg_bytes(size: int = 256, seed: int = 0) -> bytes:
    return encode(chest_like_pixels(size, seed), "JPEG")


def png_bytes(size: int = 256, seed: int = 0, mode: str = "L") -> bytes:
    return encode(chest_like_pixels(size, seed), "PNG", mode)
