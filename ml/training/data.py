"""What training does with a labelled film folder (read by ``ml.serving.films``): the patient-grouped
train/validation split, budgeted subsamples, class counts and weights, and the data fingerprint.

The batches themselves (augmentation, tf.data) are ``ml.training.batches``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ml.serving.artifacts import CLASS_NAMES, sha256_file
from ml.serving.films import ImageRecord, list_images
from ml.serving.settings import add_data_dir_argument, require_data_dir


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


def data_file_lines(root: Path, splits: dict[str, Sequence[ImageRecord]]) -> list[str]:
    """'split<TAB>class<TAB>relpath<TAB>sha256' for every file used: the data fingerprint."""
    lines = []
    for split, records in splits.items():
        for r in records:
            lines.append(f"{split}\t{CLASS_NAMES[r.label]}\t{r.relpath(root)}\t{sha256_file(r.path)}")
    return lines


# --- python -m ml split -------------------------------------------------------------------------


def split_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_dir_argument(parser)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--write", help="write 'split<TAB>class<TAB>path<TAB>patient' lines here")


def split_command(args: argparse.Namespace) -> int:
    data_dir = require_data_dir(args.data_dir)
    records = list_images(data_dir, "train")
    train, val = grouped_split(records, val_fraction=args.val_fraction, seed=args.seed)
    overlap = {r.patient for r in train} & {r.patient for r in val}
    summary = {
        "train": {"images": len(train), "patients": len({r.patient for r in train}), **class_counts(train)},
        "validation": {"images": len(val), "patients": len({r.patient for r in val}), **class_counts(val)},
        "patients_in_both": len(overlap),
        "class_weights_balanced": balanced_class_weights(train),
    }
    if args.write:
        lines = [
            f"{name}\t{CLASS_NAMES[r.label]}\t{r.relpath(data_dir)}\t{r.patient}"
            for name, rs in (("train", train), ("validation", val))
            for r in rs
        ]
        Path(args.write).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=2))
    return 0
