"""A labelled film folder as the project lays it out, ``<root>/<split>/{NORMAL,PNEUMONIA}/*``, read through
the serving path (``ml.serving.preprocessing.load_for_model``).

Serving reads it too: the worker checks a model's serving variants against ``<data>/external``
(``ml.serving.variants``) and the portal's promotion gate evaluates a candidate on it. What only training
does with the folder (the patient-grouped split, subsamples, class weights) is ``ml.training.data``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.serving.artifacts import CLASS_NAMES
from ml.serving.preprocessing import load_for_model

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".dcm", ".dicom"}

_PATIENT_PATTERNS = (
    re.compile(r"^(person\d+)_(?:bacteria|virus)_\d+$", re.IGNORECASE),
    re.compile(r"^(NORMAL2-IM-\d+)-\d+$", re.IGNORECASE),
    re.compile(r"^(IM-\d+)-\d+$", re.IGNORECASE),
)


@dataclass(frozen=True)
class ImageRecord:
    path: Path
    label: int  # index into CLASS_NAMES
    patient: str

    def relpath(self, root: Path) -> str:
        try:
            return self.path.relative_to(root).as_posix()
        except ValueError:  # an extra film outside the dataset (e.g. clinician-confirmed uploads)
            return f"external:{self.path.parent.name}/{self.path.name}"


def patient_id(file_name: str) -> str:
    """Kermany file name -> patient; unknown names are their own patient (never merged)."""
    stem = Path(file_name).stem
    for pattern in _PATIENT_PATTERNS:
        match = pattern.match(stem)
        if match:
            return match.group(1)
    return f"file:{stem}"


def list_images(root: str | Path, split: str) -> list[ImageRecord]:
    """``<root>/<split>/{NORMAL,PNEUMONIA}/*`` sorted, so runs see files in the same order."""
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"Data split folder not found: {split_dir}")
    records: list[ImageRecord] = []
    for label, class_name in enumerate(CLASS_NAMES):
        class_dir = split_dir / class_name
        if not class_dir.is_dir():
            raise FileNotFoundError(f"Class folder not found: {class_dir}")
        for path in sorted(class_dir.iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                records.append(ImageRecord(path, label, patient_id(path.name)))
    if not records:
        raise FileNotFoundError(f"No images under {split_dir}/{{NORMAL,PNEUMONIA}}")
    return records


def load_images(records: Sequence[ImageRecord], *, input_size: int, workers: int = 2) -> np.ndarray:
    """(N, S, S, 3) float32 through ml.serving.preprocessing.load_for_model, the serving path."""

    def load(record: ImageRecord) -> np.ndarray:
        return load_for_model(record.path.read_bytes(), input_size=input_size)

    out = np.empty((len(records), input_size, input_size, 3), dtype=np.float32)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # Pillow decodes without the GIL
        for i, image in enumerate(pool.map(load, records)):
            out[i] = image
    return out


def labels_of(records: Sequence[ImageRecord]) -> np.ndarray:
    return np.array([r.label for r in records], dtype=np.float32)
