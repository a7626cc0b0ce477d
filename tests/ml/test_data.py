"""Folder loading, patient ids, the grouped split, and train/serve identity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ml.serving import films
from ml.serving.films import ImageRecord, patient_id
from ml.serving.preprocessing import load_for_model
from ml.training import data
from ml.training.data import grouped_split


@pytest.mark.parametrize(
    ("name", "patient"),
    [
        ("person1000_bacteria_2931.jpeg", "person1000"),
        ("person1000_virus_1681.jpeg", "person1000"),
        ("IM-0115-0001.jpeg", "IM-0115"),
        ("NORMAL2-IM-1427-0001.jpeg", "NORMAL2-IM-1427"),
        ("scan.png", "file:scan"),
    ],
)
def test_patient_id_from_kermany_file_names(name: str, patient: str) -> None:
    assert patient_id(name) == patient


def _records(n_patients: int = 60) -> list[ImageRecord]:
    rng = np.random.default_rng(0)
    records = []
    for p in range(n_patients):
        label = int(p % 4 != 0)  # 25% NORMAL, like Kermany
        for m in range(int(rng.integers(1, 5))):
            name = f"person{p}_bacteria_{m}.jpeg" if label else f"IM-{p:04d}-{m:04d}.jpeg"
            records.append(ImageRecord(Path(name), label, patient_id(name)))
    return records


def test_grouped_split_never_puts_a_patient_on_both_sides() -> None:
    records = _records()
    train, val = grouped_split(records, val_fraction=0.2, seed=1)
    assert {r.patient for r in train}.isdisjoint({r.patient for r in val})
    assert len(train) + len(val) == len(records)
    assert 0.1 < len(val) / len(records) < 0.3
    assert {r.label for r in val} == {0, 1}  # stratified: both classes in validation


def test_grouped_split_is_seeded() -> None:
    records = _records()
    first = grouped_split(records, val_fraction=0.2, seed=7)[1]
    again = grouped_split(records, val_fraction=0.2, seed=7)[1]
    other = grouped_split(records, val_fraction=0.2, seed=8)[1]
    assert [r.path for r in first] == [r.path for r in again]
    assert [r.path for r in first] != [r.path for r in other]


def test_balanced_class_weights_equalise_the_classes() -> None:
    records = [ImageRecord(Path(f"{i}"), int(i >= 25), str(i)) for i in range(100)]
    weights = data.balanced_class_weights(records)
    assert weights == pytest.approx({0: 2.0, 1: 100 / 150})
    assert weights[0] * 25 == pytest.approx(weights[1] * 75)


def test_list_images_reads_every_format_in_the_layout(dataset_root: Path) -> None:
    records = films.list_images(dataset_root, "train")
    suffixes = {r.path.suffix for r in records}
    assert suffixes == {".jpeg", ".png", ".dcm"}
    assert data.class_counts(records) == {"NORMAL": 21, "PNEUMONIA": 21}
    with pytest.raises(FileNotFoundError, match="test"):
        films.list_images(dataset_root, "test")


@pytest.mark.slow  # ml.training.batches imports Keras and TensorFlow
def test_training_loader_yields_exactly_the_serving_tensor(dataset_root: Path) -> None:
    """The tensors a model trains and validates on equal load_for_model(bytes): no skew."""
    from ml.training import batches

    records = films.list_images(dataset_root, "train")
    images = films.load_images(records, input_size=48)
    ds = batches.make_dataset(images, films.labels_of(records), batch_size=7, training=False, augment=True, seed=0)
    batched = np.concatenate([ds[i][0] for i in range(len(ds))])
    for i, record in enumerate(records):
        served = load_for_model(record.path.read_bytes(), input_size=48)
        np.testing.assert_array_equal(batched[i], served)
    assert batched.dtype == np.float32


@pytest.mark.slow  # ml.training.batches imports Keras and TensorFlow
def test_augmentation_happens_only_in_training(dataset_root: Path) -> None:
    from ml.training import batches

    records = films.list_images(dataset_root, "train")[:8]
    images = films.load_images(records, input_size=48)
    labels = films.labels_of(records)
    train_ds = batches.make_dataset(images, labels, batch_size=8, training=True, augment=True, seed=0)
    augmented = train_ds[0][0]
    originals = {img.tobytes() for img in images}
    changed = sum(img.tobytes() not in originals for img in augmented)
    assert changed == len(images)


@pytest.mark.slow  # ml.training.training imports Keras and TensorFlow
def test_no_external_or_val_file_enters_a_training_list(dataset_root: Path, tmp_path: Path) -> None:
    """Training reads <data>/train only: a copy of the same films under external/ never joins it, and the
    bundled model's file list (data_files.txt, with each file's sha256) names train/ files only."""
    import shutil

    from ml.training import training
    from tests.ml.conftest import QUICK

    data_root = tmp_path / "data"
    shutil.copytree(dataset_root / "train", data_root / "train")
    shutil.copytree(dataset_root / "val", data_root / "external")
    split = training.load_split(QUICK, data_root)
    used = {r.path.resolve() for r in [*split.train, *split.val]}
    assert used and all((data_root / "train") in path.parents for path in used)
    assert not any((data_root / "external") in path.parents for path in used)

    bundled = Path(__file__).resolve().parents[2] / "ml" / "default_model" / "data_files.txt"
    rows = [line.split("\t") for line in bundled.read_text().splitlines()]
    assert {split_name for split_name, *_ in rows} == {"train", "validation"}
    assert all(relpath.startswith("train/") for _, _, relpath, _ in rows)


@pytest.mark.slow  # ml.training.batches imports Keras and TensorFlow
def test_acquisition_batches_stay_films_and_keep_soft_labels(dataset_root: Path) -> None:
    """The acquisition policy changes every film but keeps shape, dtype and the 0..255 range; labels
    (soft teacher probabilities when distilling) pass through untouched, and each epoch reshuffles."""
    from ml.training import batches

    records = films.list_images(dataset_root, "train")[:12]
    images = films.load_images(records, input_size=32)
    soft = np.linspace(0.05, 0.95, len(records)).astype(np.float32)
    ds = batches.make_dataset(images, soft, batch_size=6, training=True, augment=True, seed=3, policy="acquisition")
    x, y = ds[0]
    assert x.shape == (6, 32, 32, 3) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 255.0
    assert set(np.round(y, 4)) <= set(np.round(soft, 4))
    first_epoch = np.concatenate([ds[i][1] for i in range(len(ds))])
    ds.on_epoch_end()
    second_epoch = np.concatenate([ds[i][1] for i in range(len(ds))])
    assert sorted(first_epoch) == sorted(second_epoch) == sorted(soft)
    with pytest.raises(ValueError, match="policy"):
        batches.make_dataset(images, soft, batch_size=6, training=True, augment=True, seed=3, policy="colour")


@pytest.mark.slow  # ml.training.batches imports Keras and TensorFlow
def test_file_jitter_resamples_and_recompresses_about_half_the_films_reproducibly() -> None:
    """The robust policy's last step: a resize through another resampler and a JPEG re-encoding,
    each for about half the films, gray channels kept equal, seeded by the batches' generator."""
    from ml.training import batches

    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (40, 64, 64, 1)).astype(np.float32)
    images = np.repeat(gray, 3, axis=3)
    out = batches.file_jitter(images, np.random.default_rng(5))
    again = batches.file_jitter(images, np.random.default_rng(5))
    assert out.shape == images.shape and out.dtype == np.float32
    assert np.array_equal(out, again)
    assert np.array_equal(out[..., 0], out[..., 2]) and out.min() >= 0.0 and out.max() <= 255.0
    changed = [not np.array_equal(out[i], images[i]) for i in range(len(images))]
    assert 0.6 < np.mean(changed) < 0.9  # 1 - 0.5 * 0.5 of the films are touched
    assert np.array_equal(images, np.repeat(gray, 3, axis=3))  # the input is not modified


@pytest.mark.slow  # ml.training.batches imports Keras and TensorFlow
def test_robust_batches_stay_films(dataset_root: Path) -> None:
    from ml.training import batches

    records = films.list_images(dataset_root, "train")[:12]
    images = films.load_images(records, input_size=32)
    labels = films.labels_of(records)
    ds = batches.make_dataset(images, labels, batch_size=6, training=True, augment=True, seed=3, policy="robust")
    x, y = ds[0]
    assert x.shape == (6, 32, 32, 3) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 255.0 and np.array_equal(x[..., 0], x[..., 1])
