"""Folder loading, patient ids, the patient-grouped split and tf.data pipelines."""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ml.artifacts import CLASS_NAMES, sha256_file
from ml.preprocessing import load_for_model

if TYPE_CHECKING:
    import tensorflow as tf

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


def augmenter(seed: int) -> tf.keras.Sequential:
    """Training-only augmentation (zoom, rotation, flip, shift, shear); never in the model."""
    import keras

    # Reflect, not black, at the borders: black fill darkened ~17% of each training film, which
    # shifted BatchNorm statistics away from un-augmented validation/serving films (the first
    # run's validation predictions collapsed to one class while training AUC rose).
    # Horizontal flips are in the source projects' recipe; pneumonia labels do not depend on side.
    return keras.Sequential(
        [
            keras.layers.RandomZoom(0.1, fill_mode="reflect", seed=seed),
            keras.layers.RandomRotation(10 / 360, fill_mode="reflect", seed=seed + 1),
            keras.layers.RandomFlip("horizontal", seed=seed + 2),
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=seed + 3),
            keras.layers.RandomShear(x_factor=0.1, y_factor=0.1, fill_mode="reflect", seed=seed + 4),
        ],
        name="augmentation",
    )


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int,
    training: bool,
    augment: bool,
    seed: int,
    policy: str = "geometric",
) -> tf.data.Dataset:
    """``policy``: "geometric" (the source projects' recipe) or "acquisition" (geometric, then
    what differs between machines and periods: exposure, contrast, gamma, blur and noise)."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if training:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if training and augment:
        aug = augmenter(seed)
        ds = ds.map(lambda x, y: (aug(x, training=True), y), num_parallel_calls=1)
        if policy == "acquisition":
            ds = ds.map(lambda x, y: (acquisition_jitter(x), y), num_parallel_calls=1)
        elif policy != "geometric":
            raise ValueError(f"unknown augmentation policy {policy!r}")
    return ds.prefetch(1)


def acquisition_jitter(images: tf.Tensor) -> tf.Tensor:
    """Per film, on (N, S, S, 3) 0..255: gamma 0.7-1.4, contrast x0.75-1.3 about the film's mean,
    brightness +-15 levels, a 3x3 blur for half the films, Gaussian noise sigma 0-4 levels.

    Test-period NORMAL films score higher than training ones (docs/model-comparison.md): these are
    the ways one radiography room, processing or period differs from another. No colour: films are gray.
    """
    import tensorflow as tf

    n = tf.shape(images)[0]
    x = tf.clip_by_value(images / 255.0, 0.0, 1.0)
    gamma = tf.exp(tf.random.uniform([n, 1, 1, 1], tf.math.log(0.7), tf.math.log(1.4)))
    x = tf.pow(x + 1e-6, gamma)
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    x = (x - mean) * tf.random.uniform([n, 1, 1, 1], 0.75, 1.3) + mean
    x = x + tf.random.uniform([n, 1, 1, 1], -15.0 / 255, 15.0 / 255)
    blurred = tf.nn.avg_pool2d(x, ksize=3, strides=1, padding="SAME")
    x = tf.where(tf.random.uniform([n, 1, 1, 1]) < 0.5, blurred, x)
    size = tf.shape(x)
    noise = tf.random.normal([size[0], size[1], size[2], 1])  # one noise for the three gray channels
    x = x + noise * tf.random.uniform([n, 1, 1, 1], 0.0, 4.0 / 255)
    return tf.clip_by_value(x, 0.0, 1.0) * 255.0
