"""Files that lie about their size are refused from the bytes themselves, before any pixel is decoded.

Each fixture is made here, small: a real film whose DICOM header is then edited to disagree with its
codestream, a deflated dataset whose inflated length passes the cap, PNGs whose IHDR or EXIF would make a
decode expensive. "Before decoding" is checked by making every decoder raise if it is called (pydicom's
pixel decoders and Pillow's image loading), and the memory a refusal takes with tracemalloc.
"""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageOps
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from ml.serving import codestream, decode
from ml.serving.decode import ImageDecodeError, decode_image_bytes, decoded_bytes_estimate, read_dicom_metadata
from ml.training.nonchest import dicom_file


def _film(rows: int = 96, columns: int = 80) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 4000, (rows, columns)).astype(np.uint16)
    return dicom_file(pixels, Modality="CR", RescaleSlope="2", WindowCenter="2000", WindowWidth="3000")


def _save(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _compressed(syntax: str, **header: object) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(_film()))
    ds.compress(syntax)
    for name, value in header.items():
        setattr(ds, name, value)
    return _save(ds)


@pytest.fixture
def no_pixel_decoding(monkeypatch):
    """Any pixel decode fails the test: pydicom's (every transfer syntax) and Pillow's."""

    def decoded(*args, **kwargs):
        raise AssertionError("a pixel decoder ran")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(decoded))
    monkeypatch.setattr(Image.Image, "load", decoded)
    monkeypatch.setattr(Image.Image, "getexif", decoded)


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, JPEGLSLossless])
def test_a_header_that_lies_about_the_codestream_is_refused_before_decoding(syntax, no_pixel_decoding):
    lying = _compressed(syntax, Rows=32, Columns=32)
    with pytest.raises(ImageDecodeError, match=r"header says 32x32 but the image data .* is 80x96"):
        decode_image_bytes(lying)
    assert decoded_bytes_estimate(lying) == 0  # the budget does not take the header's word either


def test_a_16000_pixel_jpeg_2000_codestream_under_a_512_header_is_refused_with_no_memory_spent():
    """The attack of issue 31: SIZ says 16000x16000 (a 1.5 GB decode), the header 512x512."""
    data = bytearray(_compressed(JPEG2000Lossless, Rows=512, Columns=512))
    at = data.index(codestream.J2K_MAGIC)
    data[at + 8 : at + 16] = struct.pack(">II", 16000, 16000)
    tracemalloc.start()
    try:
        with pytest.raises(ImageDecodeError, match="header says 512x512 but the image data .* is 16000x16000"):
            decode_image_bytes(bytes(data))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(data) + 2**20


def test_more_bits_or_samples_in_the_codestream_than_the_header_says_are_refused(no_pixel_decoding):
    with pytest.raises(ImageDecodeError, match="8-bit but the image data .* 12-bit"):
        decode_image_bytes(_compressed(JPEG2000Lossless, BitsAllocated=8, BitsStored=8, HighBit=7))
    ds = pydicom.dcmread(io.BytesIO(_film()))
    rgb = np.zeros((32, 32, 3), dtype=np.uint8)
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 32, 8, 8, 7
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.compress(JPEG2000Lossless, rgb)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    del ds.PlanarConfiguration
    with pytest.raises(ImageDecodeError, match="1 samples per pixel but the image data .* is 3"):
        decode_image_bytes(_save(ds))


def test_every_frame_is_counted_against_number_of_frames(no_pixel_decoding):
    ds = pydicom.dcmread(io.BytesIO(_compressed(JPEG2000Lossless)))
    frame = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = pydicom.encaps.encapsulate([frame, frame, frame], has_bot=True)
    ds.NumberOfFrames = 2
    with pytest.raises(ImageDecodeError, match="says 2 frames but the image data holds more"):
        decode.dicom_true_decoded_bytes(pydicom.dcmread(io.BytesIO(_save(ds))))


def test_an_rle_frame_that_decodes_past_its_header_is_refused(no_pixel_decoding):
    with pytest.raises(ImageDecodeError, match="RLE image data decodes to more than the header's 80x40"):
        decode_image_bytes(_compressed(RLELossless, Rows=40))


def test_honest_compressed_films_decode_as_their_uncompressed_original():
    expected = decode_image_bytes(_film()).pixels
    for syntax in (JPEG2000Lossless, JPEGLSLossless, RLELossless):
        data = _compressed(syntax)
        assert np.array_equal(decode_image_bytes(data).pixels, expected), syntax
        assert decoded_bytes_estimate(data) == 96 * 80 * 2


def test_sof_of_every_jpeg_kind_and_jp2_boxes_are_read():
    for marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC7, 0xC9, 0xCB, 0xCF, 0xF7):
        jpeg = b"\xff\xd8" + b"\xff\xe0\x00\x04ab" + bytes([0xFF, marker]) + struct.pack(">HBHHB", 11, 12, 300, 200, 1)
        size = codestream.jpeg_size(jpeg + b"\x01\x11\x00")
        assert (size.width, size.height, size.components, size.precision) == (200, 300, 1, 12)
    siz = struct.pack(">HHIIIIIIIIH", 41, 0, 640, 480, 0, 0, 640, 480, 0, 0, 1) + b"\x0f\x01\x01"
    j2k = codestream.J2K_MAGIC[:2] + b"\xff\x51" + siz
    jp2 = codestream.JP2_MAGIC + struct.pack(">I4s", 12, b"ftyp") + b"jp2 " + struct.pack(">I4s", 8 + len(j2k), b"jp2c")
    for data in (j2k, jp2 + j2k):
        size = codestream.j2k_size(data)
        assert (size.width, size.height, size.components, size.precision) == (640, 480, 1, 16)
        assert size.decoded_bytes == 640 * 480 * 2


def _deflated(extra: int) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(_film()))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    if extra:
        ds.add_new((0x0009, 0x0010), "LO", "BOMB")
        ds.add_new((0x0009, 0x1000), "OB", bytes(extra))
    return _save(ds)


def test_a_deflated_dataset_is_read_within_its_cap():
    data = _deflated(0)
    assert np.array_equal(decode_image_bytes(data).pixels, decode_image_bytes(_film()).pixels)
    assert read_dicom_metadata(data) == {"Modality": "CR"}


@pytest.mark.parametrize("read", [decode_image_bytes, read_dicom_metadata])
def test_a_deflate_bomb_is_refused_once_the_inflated_length_passes_the_cap(monkeypatch, read):
    """4 MB of zeros deflate to 4 KB; with a 1 MB cap nothing near the full length is ever inflated."""
    monkeypatch.setattr(decode, "MAX_INFLATED_BYTES", 2**20)
    bomb = _deflated(4 * 2**20)
    assert len(bomb) < 40_000
    tracemalloc.start()
    try:
        with pytest.raises(ImageDecodeError, match="inflates to more than 1 MB"):
            read(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * 2**20
    assert decoded_bytes_estimate(bomb) == 0


def test_inflate_bounded_stops_at_the_cap_and_keeps_what_fits():
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    stream = deflater.compress(bytes(10 * 2**20)) + deflater.flush()
    assert len(codestream.inflate_bounded(stream, limit=10 * 2**20).getvalue()) == 10 * 2**20
    with pytest.raises(codestream.InflateLimitExceeded):
        codestream.inflate_bounded(stream, limit=10 * 2**20 - 1)
    with pytest.raises(codestream.CodestreamError):
        codestream.inflate_bounded(b"\xff" * 100, limit=2**20)


def _png_with_chunk(image: Image.Image, kind: bytes, payload: bytes) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    png = buffer.getvalue()
    chunk = struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    return png[:-12] + chunk + png[-12:]  # after the pixel data, before IEND


def test_png_orientation_is_read_from_an_exif_chunk_after_the_pixels_without_decoding(monkeypatch):
    exif = Image.Exif()
    exif[0x0112] = 6
    film = Image.fromarray(np.arange(60 * 40, dtype=np.uint32).reshape(60, 40).astype(np.uint8))
    data = _png_with_chunk(film, b"eXIf", exif.tobytes() + bytes(2**20))  # a big EXIF block: read, not loaded
    assert codestream.png_header(data).orientation == 6
    calls = []
    monkeypatch.setattr(Image.Image, "getexif", lambda self: calls.append(self) or Image.Exif())
    decoded = decode_image_bytes(data)
    assert calls == []
    expected = np.asarray(film.rotate(-90, expand=True))  # orientation 6: turned a quarter clockwise
    assert np.array_equal(decoded.pixels, expected) and (decoded.width, decoded.height) == (60, 40)


def test_a_png_over_the_limits_is_refused_from_its_ihdr_before_any_decode(no_pixel_decoding):
    header = struct.pack(">IIBBBBB", 7000, 7000, 16, 0, 0, 0, 0)
    png = codestream.PNG_SIGNATURE + struct.pack(">I", 13) + b"IHDR" + header + struct.pack(">I", 0)
    png += struct.pack(">I", 0) + b"IEND" + struct.pack(">I", 0)
    with pytest.raises(ImageDecodeError, match="too much pixel data"):
        decode_image_bytes(png)
    assert decoded_bytes_estimate(png) == 7000 * 7000 * 2
    strip = codestream.PNG_SIGNATURE + struct.pack(">I", 13) + b"IHDR" + struct.pack(">IIBBBBB", 16, 1_570_000, 16, 0,
                                                                                     0, 0, 0)  # fmt: skip
    with pytest.raises(ImageDecodeError, match="longer than a radiograph can be"):
        decode_image_bytes(strip + bytes(4))
    assert Image.MAX_IMAGE_PIXELS == decode.MAX_PIXELS


def test_a_palette_png_is_mapped_to_gray_as_rgba_would_give_it():
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 255, (70, 50, 3), dtype=np.uint8)).convert("P", colors=200)
    image.info["transparency"] = 3
    buffer = io.BytesIO()
    image.save(buffer, "PNG", transparency=3)
    data = buffer.getvalue()
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA").convert("L"))
    assert np.array_equal(decode_image_bytes(data).pixels, expected)
    assert decoded_bytes_estimate(data) == 70 * 50  # one byte a pixel: never expanded


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_turns_a_jpeg_as_pillow_does(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    film = Image.fromarray(np.random.default_rng(orientation).integers(0, 255, (30, 50), dtype=np.uint8))
    buffer = io.BytesIO()
    film.save(buffer, "JPEG", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buffer.getvalue()))).convert("L"))
    assert np.array_equal(decode_image_bytes(buffer.getvalue()).pixels, expected)
