"""Property-based fuzzing of the upload parser: any bytes give an image or a clear refusal, never a crash.

Colour modes and DICOM variants have their own tests in tests/ml/test_preprocessing.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diagnostics.services.images import image_validate_upload
from ml.serving.decode import DecodedImage, ImageDecodeError, decode_image_bytes
from ml.serving.preprocessing import load_for_model

from .images import dicom_bytes, jpeg_bytes, png_bytes

DICOM_PIXELS = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 3  # 12-bit ramp
SEEDS = [jpeg_bytes(size=64), png_bytes(size=64), png_bytes(size=48, mode="RGBA"), dicom_bytes(DICOM_PIXELS)]


def check(data: bytes) -> None:
    # The web process's check (a JPEG decoded at a reduced scale) refuses with a reason or accepts.
    try:
        image_validate_upload(filename="fuzz", data=data)
    except ValidationError as error:
        assert error.messages and all(error.messages), "a refusal must say why"
    try:
        decoded = decode_image_bytes(data)
    except ImageDecodeError as error:
        assert str(error), "a refusal must say why"
        return
    assert isinstance(decoded, DecodedImage)
    assert decoded.pixels.dtype == np.uint8 and decoded.pixels.ndim == 2
    assert decoded.width > 0 and decoded.height > 0
    # Whatever decodes must also go through the model's preprocessing.
    try:
        tensor = load_for_model(data, input_size=32)
    except ImageDecodeError:
        return
    assert tensor.shape == (32, 32, 3) and np.isfinite(tensor).all()


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes_are_refused_or_decoded(data):
    check(data)


@FUZZ
@given(st.sampled_from([b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"\0" * 128 + b"DICM"]), st.binary(max_size=4096))
def test_a_right_magic_number_with_garbage_after_it(magic, tail):
    check(magic + tail)


@pytest.mark.slow  # hypothesis: many decodes of real films
@FUZZ
@given(st.sampled_from(range(len(SEEDS))), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=12))
def test_mutated_real_images(seed_index, mutations):
    data = bytearray(SEEDS[seed_index])
    for position, value in mutations:
        data[position % len(data)] = value
    check(bytes(data))


@FUZZ
@given(st.sampled_from(range(len(SEEDS))), st.integers(1, 10**6))
def test_truncated_real_images(seed_index, cut):
    data = SEEDS[seed_index]
    check(data[: cut % len(data)])


def test_a_dicom_element_with_an_unknown_value_representation_is_refused_not_a_crash():
    # Found by the fuzzer: pydicom reads elements lazily and raised NotImplementedError for a
    # corrupt VR when the header was read after dcmread.
    data = bytearray(SEEDS[3])
    position = data.find(b"\x18\x00\x15\x00")  # (0018,0015) Body Part Examined, explicit VR
    assert position > 0
    data[position + 4 : position + 6] = b"Cn"
    check(bytes(data))
