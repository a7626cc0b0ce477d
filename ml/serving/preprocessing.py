"""The one image path shared by training, evaluation and serving.

Bytes -> ``ml.serving.decode.decode_image_bytes`` -> (H, W) uint8 grayscale -> ``preprocess`` (squashed
to 224 x 224, the training films' own size, then to the model's S x S) -> float32 (S, S, 3) in 0..255.
Model-specific normalisation lives inside the Keras model (and so inside the ONNX graph), which keeps
this module free of TensorFlow and impossible to drift from the model. Any change to the transform
must bump ``PREPROCESSING_VERSION``: artifacts record the version they were trained with and the
predictor refuses a mismatch (``serves_preprocessing``).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ml.serving.decode import decode_image_bytes

PREPROCESSING_VERSION = "gray-squash-224-v3"
# The training films were squashed to 224 x 224 by a third party, so every film reaches the model through
# an image of that size: a full-size upload then carries the same detail as a training film whatever the
# model's input size (straight to 299 px it carried more, and scored up to 0.14 higher than its 224 px
# copy; docs/generalisation.md).
SOURCE_SIDE = 224
# How a bigger film is squashed to SOURCE_SIDE. Bicubic sits between the softer bilinear and the sharper
# Lanczos and box filters, so a full-size film scores within 0.05 of its 224 px copy made by any of the
# four (bilinear, v2, missed Lanczos copies by up to 0.06; docs/ml/experiments/full_size_consistency.py).
SQUASH_FILTER = Image.Resampling.BICUBIC
# The way on from SOURCE_SIDE to the model's input (enlarging a 224 px film for a 299 px model).
RESIZE_FILTER = Image.Resampling.BILINEAR
# Earlier versions differ from this one only in how a film bigger than 224 px reaches 224 px (v1: straight
# to the input size; v2: bilinear). A 224 px film, as every training film is, becomes the very same tensor
# under each of them at any input size, so a model trained and calibrated on such films is still fed as it
# was trained; only full-size uploads are read the current way.
SAME_ON_224_PX_FILMS = {"gray-squash-v1", "gray-squash-224-v2"}


def decode_side(input_size: int) -> int:
    """The least side a big JPEG is decoded at (its reduced DCT scale) before the squash: never under the
    224 px every film passes through, nor under the model's input (a coarser DCT scale moved a 299 px
    model's scores of full-size films by up to 0.06 more)."""
    return max(input_size, SOURCE_SIDE)


def serves_preprocessing(version: str) -> bool:
    """Whether this code feeds a model recorded with `version` exactly as it was trained (on 224 px films)."""
    return version == PREPROCESSING_VERSION or version in SAME_ON_224_PX_FILMS


def preprocess(pixels: np.ndarray, *, input_size: int) -> np.ndarray:
    """(H, W) uint8 -> float32 (S, S, 3) in 0..255: squashed to SOURCE_SIDE, then to S.

    The aspect ratio is ignored on purpose: the training images were squashed to 224x224 by a
    third party, so serving must squash the same way. A 224 px film (every training film) is not
    resampled before the step to S.
    """
    if pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise ValueError(f"expected (H, W) uint8 pixels, got {pixels.shape} {pixels.dtype}")
    image = Image.fromarray(pixels)
    for side, resample in ((SOURCE_SIDE, SQUASH_FILTER), (input_size, RESIZE_FILTER)):
        if image.size != (side, side):
            image = image.resize((side, side), resample)
    gray = np.asarray(image, dtype=np.float32)
    return np.repeat(gray[:, :, None], 3, axis=2)


def load_for_model(data: bytes, *, input_size: int) -> np.ndarray:
    """THE path from file bytes to a model input; training, evaluation and serving call it."""
    decoded = decode_image_bytes(data, target_size=decode_side(input_size))
    return preprocess(decoded.pixels, input_size=input_size)
