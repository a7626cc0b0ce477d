"""Folder loading, patient ids, the patient-grouped split and training batches."""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.artifacts import CLASS_NAMES, sha256_file
from ml.preprocessing import load_for_model

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


def grouped_split(
    records: Sequence[ImageRecord], *, val_fraction: float, seed: int
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Train/validation split with no patient on both sides, stratified by class, seeded."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_splits = max(2, round(1 / val_fraction))
    labels = np.array([r.label for r in records])
    groups = np.array([r.patient for r in records])
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train_idx, val_idx = next(folds.split(np.zeros(len(records)), labels, groups))
    return [records[i] for i in train_idx], [records[i] for i in val_idx]


def subsample(records: Sequence[ImageRecord], *, limit: int | None, seed: int) -> list[ImageRecord]:
    """At most ``limit`` records, keeping the class ratio (budgeted comparison rows)."""
    if limit is None or limit >= len(records):
        return list(records)
    rng = np.random.default_rng(seed)
    labels = np.array([r.label for r in records])
    keep: list[int] = []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        take = max(1, round(limit * len(idx) / len(records)))
        keep.extend(rng.choice(idx, size=min(take, len(idx)), replace=False).tolist())
    return [records[i] for i in sorted(keep)]


def class_counts(records: Sequence[ImageRecord]) -> dict[str, int]:
    labels = [r.label for r in records]
    return {name: labels.count(i) for i, name in enumerate(CLASS_NAMES)}


def balanced_class_weights(records: Sequence[ImageRecord]) -> dict[int, float]:
    """n / (k * n_c): each class contributes equally to the loss (sklearn's 'balanced')."""
    counts = class_counts(records)
    total = sum(counts.values())
    return {
        i: (total / (len(CLASS_NAMES) * counts[name]) if counts[name] else 0.0) for i, name in enumerate(CLASS_NAMES)
    }


def load_images(records: Sequence[ImageRecord], *, input_size: int, workers: int = 2) -> np.ndarray:
    """(N, S, S, 3) float32 through ml.preprocessing.load_for_model, the serving path."""

    def load(record: ImageRecord) -> np.ndarray:
        return load_for_model(record.path.read_bytes(), input_size=input_size)

    out = np.empty((len(records), input_size, input_size, 3), dtype=np.float32)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # Pillow decodes without the GIL
        for i, image in enumerate(pool.map(load, records)):
            out[i] = image
    return out


def labels_of(records: Sequence[ImageRecord]) -> np.ndarray:
    return np.array([r.label for r in records], dtype=np.float32)


def data_file_lines(root: Path, splits: dict[str, Sequence[ImageRecord]]) -> list[str]:
    """'split<TAB>class<TAB>relpath<TAB>sha256' for every file used: the data fingerprint."""
    lines = []
    for split, records in splits.items():
        for r in records:
            lines.append(f"{split}\t{CLASS_NAMES[r.label]}\t{r.relpath(root)}\t{sha256_file(r.path)}")
    return lines
