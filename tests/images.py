"""Small X-ray images written in memory from the real films in tests/fixtures/films.

The input gate (ml/gate.py) refuses anything that is not a frontal chest radiograph, drawn
imitations included, so a test that expects a score uploads a real film. ``seed`` picks the film
and adds a faint noise of its own, so that two seeds never give the same bytes.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
from PIL import Image

FILMS_DIR = Path(__file__).resolve().parent / "fixtures" / "films"


@functools.cache
def _films() -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(Image.open(path).convert("L")) for path in sorted(FILMS_DIR.glob("*.jpeg")))


def chest_like_pixels(size: int = 256, seed: int = 0) -> np.ndarray:
    """A real chest film (one of four, by seed) at size×size, with a faint seed-specific noise."""
    films = _films()
    film = Image.fromarray(films[seed % len(films)]).resize((size, size), Image.Resampling.BILINEAR)
    noise = np.random.default_rng(seed).normal(0, 1.5, (size, size))
    return np.clip(np.asarray(film, dtype=np.float64) + noise, 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray, fmt: str, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def jpeg_bytes(size: int = 256, seed: int = 0) -> bytes:
    return encode(chest_like_pixels(size, seed), "JPEG")


def png_bytes(size: int = 256, seed: int = 0, mode: str = "L") -> bytes:
    return encode(chest_like_pixels(size, seed), "PNG", mode)
