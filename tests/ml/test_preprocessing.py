"""The one preprocessing path: format detection, colour modes, DICOM, errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ml.serving import decode, preprocessing
from ml.serving.decode import ImageDecodeError, decode_image_bytes
from ml.serving.preprocessing import decode_side, load_for_model, preprocess
from tests.images import dicom_bytes
from tests.ml.conftest import encode_jpeg, encode_png


def test_serving_modules_do_not_import_tensorflow() -> None:
    code = "import sys, ml.serving.inference, ml.serving.variants, ml.serving.films; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_format_is_detected_by_content_not_name() -> None:
    gray = Image.new("L", (20, 10), 77)
    assert decode_image_bytes(encode_jpeg(gray)).format == "JPEG"
    decoded = decode_image_bytes(encode_png(gray))
    assert (decoded.format, decoded.width, decoded.height) == ("PNG", 20, 10)
    assert decoded.pixels.shape == (10, 20) and decoded.pixels.dtype == np.uint8
    assert decode_image_bytes(dicom_bytes(np.full((8, 8), 100))).format == "DICOM"


@pytest.mark.parametrize("payload", [b"%PDF-1.4 not an image", b"GIF89a......", b"\x00" * 200])
def test_unknown_content_is_refused_with_a_readable_message(payload: bytes) -> None:
    with pytest.raises(ImageDecodeError, match="not a JPEG, PNG or DICOM"):
        decode_image_bytes(payload)


def test_truncated_jpeg_is_refused() -> None:
    data = encode_jpeg(Image.effect_noise((256, 256), 50))
    with pytest.raises(ImageDecodeError, match="truncated or corrupt"):
        decode_image_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "CMYK", "LA", "1"])
def test_every_colour_mode_becomes_8bit_gray(mode: str) -> None:
    level = 255 if mode == "1" else 200  # 1-bit would dither any other gray
    image = Image.new("RGB", (12, 9), (level, level, level)).convert(mode)
    data = encode_png(image) if mode != "CMYK" else encode_jpeg(image)
    pixels = decode_image_bytes(data).pixels
    assert pixels.shape == (9, 12) and pixels.dtype == np.uint8
    assert abs(int(pixels.mean()) - level) <= 3


def test_16bit_png_is_stretched_not_clipped() -> None:
    ramp = (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)  # 12-bit data
    pixels = decode_image_bytes(encode_png(Image.fromarray(ramp))).pixels
    assert pixels.min() == 0 and pixels.max() == 255


def test_dicom_monochrome1_is_inverted_and_metadata_returned() -> None:
    ramp = np.tile(np.linspace(0, 4000, 32).astype(np.uint16), (16, 1))
    mono2 = decode_image_bytes(dicom_bytes(ramp, photometric="MONOCHROME2"))
    mono1 = decode_image_bytes(dicom_bytes(ramp, photometric="MONOCHROME1"))
    assert mono2.pixels[0, 0] == 0 and mono2.pixels[0, -1] == 255
    np.testing.assert_array_equal(mono1.pixels.astype(int), 255 - mono2.pixels.astype(int))
    assert mono1.metadata["PatientID"] == "TEST-001"
    assert mono1.metadata["ViewPosition"] == "PA" and mono1.metadata["Modality"] == "CR"
    assert (mono1.width, mono1.height) == (32, 16)


def test_dicom_window_is_applied() -> None:
    ramp = np.tile(np.linspace(0, 4000, 41).astype(np.uint16), (4, 1))  # steps of 100
    pixels = decode_image_bytes(dicom_bytes(ramp, window=(2000, 1000))).pixels[0]
    # Everything below 1500 is black and above 2500 white after windowing.
    assert pixels[:15].max() == 0 and pixels[26:].min() == 255
    assert 0 < pixels[20] < 255


def test_dicom_without_pixels_or_multiframe_is_refused() -> None:
    with pytest.raises(ImageDecodeError, match="no pixel data"):
        decode_image_bytes(dicom_bytes(np.zeros((4, 4)), with_pixels=False))
    with pytest.raises(ImageDecodeError, match="Multi-frame"):
        decode_image_bytes(dicom_bytes(np.zeros((4, 4)), frames=3))


def test_pixel_limit_is_enforced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode, "MAX_PIXELS", 100)
    with pytest.raises(ImageDecodeError, match="too large"):
        decode_image_bytes(encode_png(Image.new("L", (20, 20))))


def test_decompression_bomb_warning_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)  # warns above 300, errors above 600
    with pytest.raises(ImageDecodeError, match="too large"):
        decode_image_bytes(encode_png(Image.new("L", (20, 20))))


def test_big_jpeg_decodes_at_reduced_scale_but_reports_original_size() -> None:
    data = encode_jpeg(Image.effect_noise((1024, 800), 40))
    decoded = decode_image_bytes(data, target_size=128)
    assert (decoded.width, decoded.height) == (1024, 800)
    assert decoded.pixels.shape == (200, 256)  # 1/4 scale: smallest DCT scale >= 128 px
    assert decode_image_bytes(data).pixels.shape == (800, 1024)


def test_preprocess_squashes_to_three_identical_channels() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (50, 80), dtype=np.uint8)
    x = preprocess(pixels, input_size=32)
    assert x.shape == (32, 32, 3) and x.dtype == np.float32
    assert 0 <= x.min() and x.max() <= 255
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    with pytest.raises(ValueError):
        preprocess(pixels.astype(np.float32), input_size=32)


def test_load_for_model_is_decode_then_preprocess() -> None:
    data = encode_jpeg(Image.effect_noise((1000, 700), 40))
    for size in (64, 299):  # decoded at 224 px at least, and at the model's size if larger
        expected = preprocess(decode_image_bytes(data, target_size=decode_side(size)).pixels, input_size=size)
        np.testing.assert_array_equal(load_for_model(data, input_size=size), expected)
    assert (decode_side(64), decode_side(224), decode_side(299)) == (224, 224, 299)


@pytest.mark.parametrize("input_size", [128, 224, 299])
def test_every_film_reaches_the_model_through_the_training_films_224_px(input_size: int) -> None:
    # The training films were squashed to 224 px by a third party: a full-size film must carry no more
    # detail than they did, whatever the model's input size.
    full = np.asarray(Image.effect_noise((1400, 1100), 60), dtype=np.uint8)
    squashed = np.asarray(Image.fromarray(full).resize((224, 224), preprocessing.SQUASH_FILTER))
    np.testing.assert_array_equal(preprocess(full, input_size=input_size), preprocess(squashed, input_size=input_size))
    # A 224 px film (every training film) is not resampled on the way to a 224 px model.
    np.testing.assert_array_equal(preprocess(squashed, input_size=224)[..., 0], squashed.astype(np.float32))


def test_an_earlier_version_serves_because_it_read_224_px_films_the_same_way() -> None:
    assert preprocessing.serves_preprocessing(preprocessing.PREPROCESSING_VERSION)
    assert preprocessing.serves_preprocessing("gray-squash-v1") and preprocessing.serves_preprocessing(
        "gray-squash-224-v2"
    )
    assert not preprocessing.serves_preprocessing("something-else")
    # What makes that true: earlier versions resized every film straight to the input size (v1) or
    # squashed it bilinearly to 224 px (v2); neither touched a 224 px film on the way to any input size.
    film = np.asarray(Image.effect_noise((224, 224), 60), dtype=np.uint8)
    for size in (128, 224, 299):
        v1 = np.asarray(Image.fromarray(film).resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
        np.testing.assert_array_equal(preprocess(film, input_size=size)[..., 0], v1)


def test_decoded_size_is_budgeted_by_bytes_before_decoding():
    """Pixels x samples x bytes, not pixels alone: a 16-bit RGB DICOM under MAX_PIXELS can still be
    hundreds of MB decoded (the red team's 7745x7745 file took a worker to 2.4 GB)."""
    import io

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    from ml.serving.decode import MAX_DECODED_BYTES

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows = ds.Columns = 4000  # 16M pixels: under MAX_PIXELS, but 96 MB as 16-bit RGB
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = b"\0" * 16  # never read: refused from the header
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    with pytest.raises(ImageDecodeError, match="too much pixel data"):
        decode_image_bytes(buffer.getvalue())
    wide = Image.new("I;16", (6000, 5000))  # a 16-bit PNG of 30M pixels: 57 MB decoded
    png = io.BytesIO()
    wide.save(png, format="PNG")
    with pytest.raises(ImageDecodeError, match="too much pixel data"):
        decode_image_bytes(png.getvalue())
    assert MAX_DECODED_BYTES >= 4280 * 3520 * 2  # a full-size 16-bit chest film still fits


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_the_window_source_windows_like_the_full_film(photometric: str) -> None:
    """Window/level reads a small 16-bit copy (DecodedImage.window_source): through the same window it
    gives the full-bit-depth film's picture, downscaled, in display orientation."""
    rng = np.random.default_rng(3)
    stored = np.clip(np.add.outer(np.arange(512), np.arange(512)) * 4 + rng.integers(0, 40, (512, 512)), 0, 4095)
    decoded = decode_image_bytes(
        dicom_bytes(stored.astype(np.uint16), photometric=photometric, slope=2.0, intercept=-100.0),
        window_source_side=128,
    )
    source = decoded.window_source
    assert source is not None and source.shape == (128, 128) and source.dtype == np.uint16
    windowed = decode.apply_display_window(source, centre=40.0, width=30.0)
    # The reference: every stored value through the modality LUT, windowed in percent of its range.
    values = stored * 2.0 - 100.0
    percent = (values - values.min()) / (values.max() - values.min()) * 100.0
    if photometric == "MONOCHROME1":
        percent = 100.0 - percent  # display orientation, as the 8-bit pixels
    reference = np.clip((percent - 25.0) / 30.0, 0, 1) * 255.0
    small = np.asarray(Image.fromarray(reference.astype(np.float32)).resize((128, 128), Image.Resampling.BOX))
    assert np.abs(windowed.astype(float) - small).mean() < 3.0
    # Bright where the displayed film is bright.
    thumb = np.asarray(Image.fromarray(decoded.pixels).resize((128, 128), Image.Resampling.BOX), dtype=float)
    assert np.corrcoef(thumb.ravel(), source.astype(float).ravel())[0, 1] > 0.95
    assert decode_image_bytes(encode_png(Image.new("L", (64, 64), 9)), window_source_side=128).window_source is None
