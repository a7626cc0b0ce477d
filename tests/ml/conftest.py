"""Fixtures built by the tests themselves: no dependency on ../shared or on the network."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ml.training.config import TrainConfig

from ..images import dicom_bytes

N_PATIENTS_PER_CLASS = 10


def encode_jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encode_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def synthetic_film(label: int, seed: int, size: int = 64) -> Image.Image:
    """Gray noise; 'pneumonia' films carry a bright opacity so a model can learn something."""
    rng = np.random.default_rng(seed)
    pixels = rng.normal(90, 20, (size, size))
    if label == 1:
        yy, xx = np.mgrid[:size, :size]
        cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
        pixels += 120 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size / 6) ** 2))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert("RGB")


@pytest.fixture(scope="session")
def dataset_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """<root>/train/{NORMAL,PNEUMONIA} with Kermany-style names, 2 films per fake patient,
    plus one PNG and one DICOM so every format goes through the loader."""
    root = tmp_path_factory.mktemp("chest_xray")
    normal = root / "train" / "NORMAL"
    pneumonia = root / "train" / "PNEUMONIA"
    normal.mkdir(parents=True)
    pneumonia.mkdir(parents=True)
    seed = 0
    for p in range(N_PATIENTS_PER_CLASS):
        for m in range(2):
            seed += 1
            prefix = "NORMAL2-IM" if p % 2 else "IM"
            (normal / f"{prefix}-{p:04d}-{m + 1:04d}.jpeg").write_bytes(encode_jpeg(synthetic_film(0, seed)))
            kind = "bacteria" if m == 0 else "virus"
            seed += 1
            (pneumonia / f"person{p}_{kind}_{seed}.jpeg").write_bytes(encode_jpeg(synthetic_film(1, seed)))
    (normal / "IM-0900-0001.png").write_bytes(encode_png(synthetic_film(0, 999)))
    film = np.asarray(synthetic_film(1, 998).convert("L"), dtype=np.uint16) * 16
    (pneumonia / "person900_bacteria_1.dcm").write_bytes(dicom_bytes(film))
    val = root / "val"
    for label, name in enumerate(("NORMAL", "PNEUMONIA")):
        (val / name).mkdir(parents=True)
        for i in range(4):
            (val / name / f"IM-{500 + 10 * label + i:04d}-0001.jpeg").write_bytes(
                encode_jpeg(synthetic_film(label, 5000 + 10 * label + i, size=96))
            )
    return root


# A tiny real training run (cnn, 32 px, 1 epoch), shared by the training and calibration tests.
QUICK = TrainConfig(architecture="cnn", input_size=32, epochs=1, batch_size=8, bootstrap_samples=20, seed=3)


@pytest.fixture(scope="session")
def artifact(dataset_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ml.training import training

    root = tmp_path_factory.mktemp("runs")
    return training.train(QUICK, data_dir=dataset_root, output_root=root, cache_dir=root / "cache", latency_runs=3)
