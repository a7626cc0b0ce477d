"""Training batches: shuffling and augmentation, the same on every Keras backend.

A keras PyDataset with augmentation in Keras layers and keras.ops, so the same batches train on
TensorFlow on a CPU and on PyTorch on a GPU (docs/gpu.md). Only training imports this module.
"""

from __future__ import annotations

import keras
import numpy as np


def augmenter(seed: int):  # noqa: ANN201 (a keras.Sequential)
    """Training-only augmentation (zoom, rotation, flip, shift, shear); never in the model."""
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
) -> FilmBatches:
    """``policy``: "geometric" (the source projects' recipe) or "acquisition" (geometric, then
    what differs between machines and periods: exposure, contrast, gamma, blur and noise).

    Backend-neutral (a keras PyDataset; augmentation in Keras layers and keras.ops), so the same
    batches train on TensorFlow on a CPU and on PyTorch on a GPU (docs/gpu.md).
    """
    if policy not in ("geometric", "acquisition"):
        raise ValueError(f"unknown augmentation policy {policy!r}")
    return FilmBatches(
        images, labels, batch_size=batch_size, shuffle=training, augment=training and augment, seed=seed, policy=policy
    )


class FilmBatches(keras.utils.PyDataset):
    """(images, labels) in batches; shuffled each epoch and augmented when training.

    Labels may be soft (teacher probabilities for distillation): they pass through unchanged.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        batch_size: int,
        shuffle: bool,
        augment: bool,
        seed: int,
        policy: str,
    ) -> None:
        super().__init__(workers=1, use_multiprocessing=False)
        self.images = images
        self.labels = np.asarray(labels, dtype=np.float32)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.policy = policy
        self._rng = np.random.default_rng(seed)
        self._order = np.arange(len(images))
        self._augmenter = augmenter(seed) if augment else None
        if shuffle:
            self._rng.shuffle(self._order)

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        take = np.sort(self._order[index * self.batch_size : (index + 1) * self.batch_size])
        x, y = self.images[take], self.labels[take]
        if self._augmenter is None:
            return x, y
        out = self._augmenter(x, training=True)
        if self.policy == "acquisition":
            out = acquisition_jitter(out)
        return keras.ops.convert_to_numpy(out).astype(np.float32), y

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self._rng.shuffle(self._order)


def acquisition_jitter(images):  # noqa: ANN001, ANN201 (a backend tensor in, one out)
    """Per film, on (N, S, S, 3) 0..255: gamma 0.7-1.4, contrast x0.75-1.3 about the film's mean,
    brightness +-15 levels, a 3x3 blur for half the films, Gaussian noise sigma 0-4 levels.

    Test-period NORMAL films score higher than training ones (docs/model-comparison.md): these are
    the ways one radiography room, processing or period differs from another. No colour: films are gray.
    """
    ops, rnd = keras.ops, keras.random
    n = ops.shape(images)[0]
    x = ops.clip(ops.convert_to_tensor(images, dtype="float32") / 255.0, 0.0, 1.0)
    gamma = ops.exp(rnd.uniform((n, 1, 1, 1), float(np.log(0.7)), float(np.log(1.4))))
    x = ops.power(x + 1e-6, gamma)
    mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)
    x = (x - mean) * rnd.uniform((n, 1, 1, 1), 0.75, 1.3) + mean
    x = x + rnd.uniform((n, 1, 1, 1), -15.0 / 255, 15.0 / 255)
    blurred = ops.average_pool(x, pool_size=3, strides=1, padding="same")
    x = ops.where(rnd.uniform((n, 1, 1, 1)) < 0.5, blurred, x)
    size = ops.shape(x)
    noise = rnd.normal((size[0], size[1], size[2], 1))  # one noise for the three gray channels
    x = x + noise * rnd.uniform((n, 1, 1, 1), 0.0, 4.0 / 255)
    return ops.clip(x, 0.0, 1.0) * 255.0
