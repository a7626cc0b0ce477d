"""Training batches: shuffling and augmentation, the same on every Keras backend.

A keras PyDataset with augmentation in Keras layers and keras.ops, so the same batches train on
TensorFlow on a CPU and on PyTorch on a GPU (docs/gpu.md). Only training imports this module.
"""

from __future__ import annotations

import io

import keras
import numpy as np
from PIL import Image

from ml.training.config import AUGMENTATION_POLICIES


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
    """``policy``: "geometric" (the source projects' recipe), "acquisition" (geometric, then
    what differs between machines and periods: exposure, contrast, gamma, blur and noise) or
    "robust" (acquisition, then what happens to a film on its way to us: file_jitter).

    Backend-neutral (a keras PyDataset; augmentation in Keras layers and keras.ops), so the same
    batches train on TensorFlow on a CPU and on PyTorch on a GPU (docs/gpu.md).
    """
    if policy not in AUGMENTATION_POLICIES:
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
        if self.policy in ("acquisition", "robust"):
            out = acquisition_jitter(out)
        out = keras.ops.convert_to_numpy(out).astype(np.float32)
        if self.policy == "robust":
            out = file_jitter(out, self._rng)
        return out, y

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


# Resamplers hospitals' and third parties' tools use to shrink a film (Pillow's names).
_RESAMPLERS = (
    Image.Resampling.BILINEAR,
    Image.Resampling.BICUBIC,
    Image.Resampling.LANCZOS,
    Image.Resampling.BOX,
    Image.Resampling.HAMMING,
)


def file_jitter(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per film, on (N, S, S, 3) gray 0..255: for half the films a resize through another resampler
    (up 2x, then back down with one of five), for half a JPEG re-encoding at quality 60-95.

    The served model scored the same full-size film 0.05-0.07 apart when it came as a 224 px copy
    made with Lanczos, or saved once more as JPEG q95 (docs/generalisation.md): the sharpness a
    resampler leaves and the JPEG's quantisation noise are not the pneumonia. In NumPy and Pillow,
    so it runs the same under every Keras backend; seeded by the batches' generator.
    """
    out = images.copy()
    size = images.shape[1]
    for i in range(len(images)):
        resample, recompress = rng.random(2) < 0.5
        if not (resample or recompress):
            continue
        film = Image.fromarray(np.clip(np.rint(images[i, :, :, 0]), 0, 255).astype(np.uint8))
        if resample:
            film = film.resize((2 * size, 2 * size), Image.Resampling.BICUBIC)
            film = film.resize((size, size), _RESAMPLERS[int(rng.integers(len(_RESAMPLERS)))])
        if recompress:
            buffer = io.BytesIO()
            film.save(buffer, format="JPEG", quality=int(rng.integers(60, 96)))
            film = Image.open(buffer).convert("L")
        out[i] = np.asarray(film, dtype=np.float32)[:, :, None]
    return out
