"""Fixtures built by the tests themselves: no dependency on ../shared or on the network."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ml.config import TrainConfig

N_PATIENTS_PER_CLASS = 10


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def dicom_bytes(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    frames: int = 1,
    with_pixels: bool = True,
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float, float] | None = None,
    bits_stored: int = 12,
) -> bytes:
    """A minimal valid DICOM Part 10 file (explicit VR little endian, 16-bit unsigned)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = "TEST-001"
    ds.StudyDate = "20240102"
    ds.Modality = "CR"
    ds.ViewPosition = "PA"
    ds.BodyPartExamined = "CHEST"
    if with_pixels:
        arr = np.asarray(pixels, dtype=np.uint16)
        ds.Rows, ds.Columns = arr.shape[-2:]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated = 16
        ds.BitsStored = bits_stored
        ds.HighBit = bits_stored - 1
        ds.PixelRepresentation = 0
        if frames > 1:
            ds.NumberOfFrames = frames
            arr = np.stack([arr] * frames)
        if slope is not None:
            ds.RescaleSlope = slope
            ds.RescaleIntercept = intercept or 0
        if window is not None:
            ds.WindowCenter, ds.WindowWidth = window
        ds.PixelData = arr.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
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
            (normal / f"{prefix}-{p:04d}-{m + 1:04d}.jpeg").write_bytes(jpeg_bytes(synthetic_film(0, seed)))
            kind = "bacteria" if m == 0 else "virus"
            seed += 1
            (pneumonia / f"person{p}_{kind}_{seed}.jpeg").write_bytes(jpeg_bytes(synthetic_film(1, seed)))
    (normal / "IM-0900-0001.png").write_bytes(png_bytes(synthetic_film(0, 999)))
    film = np.asarray(synthetic_film(1, 998).convert("L"), dtype=np.uint16) * 16
    (pneumonia / "person900_bacteria_1.dcm").write_bytes(dicom_bytes(film))
    val = root / "val"
    for label, name in enumerate(("NORMAL", "PNEUMONIA")):
        (val / name).mkdir(parents=True)
        for i in range(4):
            (val / name / f"IM-{500 + 10 * label + i:04d}-0001.jpeg").write_bytes(
                jpeg_bytes(synthetic_film(label, 5000 + 10 * label + i, size=96))
            )
    return root


# A tiny real training run (cnn, 32 px, 1 epoch), shared by the training and calibration tests.
QUICK = TrainConfig(architecture="cnn", input_size=32, epochs=1, batch_size=8, bootstrap_samples=20, seed=3)


@pytest.fixture(scope="session")
def artifact(dataset_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ml import training

    root = tmp_path_factory.mktemp("runs")
    return training.train(QUICK, data_dir=dataset_root, output_root=root, cache_dir=root / "cache", latency_runs=3)
