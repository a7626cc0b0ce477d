"""Small X-ray images written in memory from the real films in tests/fixtures/films.

The input gate (ml/serving/gate.py) refuses anything that is not a frontal chest radiograph, drawn
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


# Bytes never change once made: each (size, seed) is drawn and encoded once per test process (3 ms each).
@functools.cache
def jpeg_bytes(size: int = 256, seed: int = 0) -> bytes:
    return encode(chest_like_pixels(size, seed), "JPEG")


@functools.cache
def png_bytes(size: int = 256, seed: int = 0, mode: str = "L") -> bytes:
    return encode(chest_like_pixels(size, seed), "PNG", mode)


def dicom_bytes(
    pixels: np.ndarray | None = None,
    *,
    size: int = 128,
    modality: str = "CR",
    view_position: str = "PA",
    patient_id: str = "TEST-001",
    photometric: str = "MONOCHROME2",
    frames: int = 1,
    with_pixels: bool = True,
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float, float] | None = None,
    bits_stored: int = 12,
) -> bytes:
    """A minimal valid DICOM Part 10 file (explicit VR little endian, 16-bit unsigned): ``pixels``, or by
    default a real chest film (12-bit, ``size`` px), with the header tags given."""
    from ml.training.nonchest import dicom_file

    tags: dict[str, object] = {
        "PatientID": patient_id,
        "StudyDate": "20240102",
        "Modality": modality,
        "ViewPosition": view_position,
        "BodyPartExamined": "CHEST",
    }
    if slope is not None:
        tags |= {"RescaleSlope": slope, "RescaleIntercept": intercept or 0}
    if window is not None:
        tags |= {"WindowCenter": window[0], "WindowWidth": window[1]}
    if with_pixels and pixels is None:
        pixels = chest_like_pixels(size).astype(np.uint16) * 16
    return dicom_file(
        pixels if with_pixels else None, photometric=photometric, bits_stored=bits_stored, frames=frames, **tags
    )


def cr_film_bytes(
    *,
    patient_id: str,
    study_uid: str,
    sop_uid: str | None = None,
    birth_date: str = "20220301",
    patient_name: str = "Doe^Sam",
    seed: int = 0,
    size: int = 256,
    accession_number: str = "ACC-PACS-1",
    study_date: str = "20240102",
    sex: str = "F",
) -> bytes:
    """A film as a hospital's CR modality sends it: CR Image Storage with the patient, study and series
    attributes a PACS and highdicom expect (a real chest film, 12-bit)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    cr_storage = "1.2.840.10008.5.1.4.1.1.1"
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = cr_storage
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = cr_storage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = patient_name, patient_id, birth_date, sex
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid(entropy_srcs=[study_uid, "series"])
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = study_date, "101500", "1", accession_number
    ds.ReferringPhysicianName, ds.SeriesNumber, ds.InstanceNumber = "", 1, seed + 1
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition, ds.PatientOrientation = "CR", "CHEST", "PA", ["L", "F"]
    pixels = chest_like_pixels(size, seed).astype(np.uint16) * 16
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
