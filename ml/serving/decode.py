"""Bytes -> pixels: the untrusted-input boundary every film crosses first, in training and in serving.

``decode_image_bytes`` reads a JPEG, PNG or DICOM upload (format from content, never the file name),
refuses what it cannot read or what would hold too much memory (``MAX_PIXELS``, ``MAX_DECODED_BYTES``,
counted from the header before any pixel is decoded) with an ``ImageDecodeError`` a clinician can read,
and returns a ``DecodedImage``: (H, W) uint8 grayscale in display orientation, the DICOM header fields
the portal keeps, the colourfulness the input gate reads and, for display only, a DICOM film's full bit
depth. ``ml.serving.preprocessing`` takes it on from the pixels to the model's input.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

if TYPE_CHECKING:
    from pydicom import Dataset

# Anything bigger is not a plain chest film; refuse it before decoding (decompression bombs).
MAX_PIXELS = 60_000_000
# And the decoded pixel data (rows x columns x samples x bytes per sample), counted before decoding:
# a 7745x7745 16-bit RGB DICOM is 360 MB although it has fewer pixels than MAX_PIXELS. A full-size
# 16-bit chest film (4280x3520) is 30 MB.
MAX_DECODED_BYTES = 48 * 1024 * 1024
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "LA": 2, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2, "RGB": 3,
                    "YCbCr": 3, "RGBA": 4, "CMYK": 4, "I": 4, "F": 4}  # fmt: skip

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG"
DICOM_MAGIC_OFFSET = 128
DICOM_MAGIC = b"DICM"
EXIF_ORIENTATION = 0x0112

DICOM_METADATA_TAGS = (
    "PatientID",
    "PatientAge",  # e.g. "004Y": the input gate's intended-use check reads it
    "StudyDate",
    "ViewPosition",
    "Modality",
    "BodyPartExamined",
    "StudyInstanceUID",
    "SeriesDescription",
)


class ImageDecodeError(ValueError):
    """An upload that cannot be read as a chest image; the message is shown to clinicians."""


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # (H, W) uint8 grayscale, display orientation, MONOCHROME1 inverted
    format: str  # "JPEG" | "PNG" | "DICOM"
    width: int  # of the original image
    height: int
    metadata: dict[str, str] = field(default_factory=dict)
    # Colourfulness of the original (0 for grayscale): the input gate refuses colour photographs.
    chroma: float = 0.0
    # Grayscale DICOM only, when asked for (``window_source_side``): for display window/level, never for a
    # model. The stored values after the modality LUT, box-averaged to at most that side, in display
    # orientation (MONOCHROME1 inverted) and stretched to 0..65535, so a window given in percent of the
    # film's range reads the same here as on the full-bit-depth film.
    window_source: np.ndarray | None = None


def detect_format(data: bytes) -> str:
    """Format from content, never from the file name (uploads lie about extensions)."""
    if data[:3] == JPEG_MAGIC:
        return "JPEG"
    if data[:4] == PNG_MAGIC:
        return "PNG"
    if data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == DICOM_MAGIC:
        return "DICOM"
    raise ImageDecodeError("This file is not a JPEG, PNG or DICOM image.")


def decode_image_bytes(
    data: bytes, *, target_size: int | None = None, window_source_side: int | None = None
) -> DecodedImage:
    """Decode an upload to 8-bit grayscale in display orientation.

    ``target_size`` lets big JPEGs decode at a reduced DCT scale (never below target_size);
    the training loader passes the same value so train and serve see the same pixels.
    ``window_source_side``: for display only, also keep a grayscale DICOM film's full bit depth at
    most this many pixels on a side (``DecodedImage.window_source``, read by ``apply_display_window``).
    """
    if not data:
        raise ImageDecodeError("The file is empty.")
    fmt = detect_format(data)
    if fmt == "DICOM":
        return _decode_dicom(data, window_source_side)
    return _decode_raster(data, fmt, target_size)


def decoded_bytes_estimate(data: bytes, *, target_size: int | None = None) -> int:
    """What decoding `data` will hold (rows x columns x samples x bytes, as MAX_DECODED_BYTES counts it),
    read from the header alone; a big JPEG at the reduced DCT scale decode_image_bytes would use.
    0 for a file no header describes (the decode refuses it at once)."""
    try:
        fmt = detect_format(data)
        if fmt == "DICOM":
            import pydicom

            return _dicom_decoded_bytes(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
            return _raster_decoded_bytes(image, fmt, target_size)
    except Exception:  # noqa: BLE001 - any unreadable header: nothing worth budgeting, the decode refuses it
        return 0


def read_dicom_metadata(data: bytes) -> dict[str, str] | None:
    """The tags DecodedImage.metadata holds, from the header alone (no pixel is decoded); None for a file
    that is not DICOM. ImageDecodeError for a DICOM file whose header cannot be read."""
    if not data or detect_format(data) != "DICOM":
        return None
    import pydicom

    try:
        return _dicom_metadata(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True))
    except Exception as exc:  # pydicom raises many types for broken headers
        raise ImageDecodeError("The DICOM file is truncated or corrupt.") from exc


def _decode_raster(data: bytes, fmt: str, target_size: int | None) -> DecodedImage:
    with warnings.catch_warnings():
        # A bomb warning means an absurd pixel count: treat it as the error it is.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image: Image.Image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageDecodeError(f"The image is too large ({width}x{height} pixels; limit {MAX_PIXELS:,}).")
            rotated = image.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
            # Before _raster_decoded_bytes sets a JPEG to decode as luma only (the pixels training saw).
            jpeg_chroma = _jpeg_chroma(data) if fmt == "JPEG" and image.mode != "L" else None
            _check_decoded_bytes(_raster_decoded_bytes(image, fmt, target_size))
            image = ImageOps.exif_transpose(image)
            image.load()
            chroma = colourfulness(image) if jpeg_chroma is None else jpeg_chroma
            gray = _to_gray(image)
        except ImageDecodeError:
            raise
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise ImageDecodeError("The image is too large to process safely.") from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageDecodeError("The image is truncated or corrupt.") from exc
    if rotated:  # report the original size in display orientation
        width, height = height, width
    return DecodedImage(pixels=gray, format=fmt, width=width, height=height, metadata={}, chroma=chroma)


def colourfulness(image: Image.Image | np.ndarray) -> float:
    """Hasler and Suesstrunk's colourfulness of an RGB-like image (0 for grayscale), on a
    thumbnail so that it costs nothing next to the decode."""
    if isinstance(image, Image.Image):
        if image.mode in ("L", "LA", "1", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
            return 0.0
        small = image.copy()
        small.thumbnail((64, 64))
        rgb = np.asarray(small.convert("RGB"), dtype=np.float64)
    else:
        rgb = np.asarray(image, dtype=np.float64)[::8, ::8, :3]
        rgb = rgb * (255.0 / max(1.0, float(rgb.max())))
    rg = rgb[..., 0] - rgb[..., 1]
    yb = (rgb[..., 0] + rgb[..., 1]) / 2 - rgb[..., 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def _jpeg_chroma(data: bytes) -> float:
    """A colour JPEG's colourfulness from a second decode at 1/8 scale (about a millisecond)."""
    probe: Image.Image = Image.open(io.BytesIO(data))
    probe.draft("RGB", (64, 64))
    return colourfulness(probe)


def _raster_decoded_bytes(image: Image.Image, fmt: str, target_size: int | None) -> int:
    """What decoding the opened (not yet loaded) picture holds. A JPEG is first set to decode as luma
    only (the pixels training saw) at a reduced DCT scale no smaller than `target_size`."""
    if fmt == "JPEG" and target_size:
        image.draft("L", (target_size, target_size))
    return image.size[0] * image.size[1] * _BYTES_PER_PIXEL.get(image.mode, 4)


def _dicom_decoded_bytes(ds: Dataset) -> int:
    """Rows x columns x samples x bytes per sample, from the header."""
    samples, bits = int(ds.get("SamplesPerPixel", 1) or 1), int(ds.get("BitsAllocated", 16) or 16)
    return int(ds.get("Rows", 0)) * int(ds.get("Columns", 0)) * samples * max(1, (bits + 7) // 8)


def _check_decoded_bytes(size: int) -> None:
    if size > MAX_DECODED_BYTES:
        raise ImageDecodeError(
            f"The image holds too much pixel data to process safely ({size / 2**20:.0f} MB decoded; "
            f"limit {MAX_DECODED_BYTES // 2**20} MB)."
        )


def _to_gray(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> (H, W) uint8."""
    mode = image.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # High bit depth: stretch the used range, as DICOM windowing would; a fixed /257
        # would leave 12-bit films almost black.
        stored = np.asarray(image)
        return _stretch_to_uint8(len(stored), lambda rows: stored[rows].astype(np.float64))
    if mode == "P":
        image = image.convert("RGBA")
    if mode == "CMYK":
        image = image.convert("RGB")
    if mode == "1":
        image = image.convert("L")
    # L/LA/RGB/RGBA/YCbCr: ITU-R 601 luma; alpha is dropped.
    return np.asarray(image.convert("L"), dtype=np.uint8).copy()


# Rows converted at a time: float64 copies of a band, never of a whole film (a 25 MP 16-bit film is 200 MB
# per float64 copy; benchmarks/upload_memory.py). Every step is per pixel, so the result is the same.
BAND_ROWS = 256


def _stretch_to_uint8(rows: int, values_of: Callable[[slice], np.ndarray], *, invert: bool = False) -> np.ndarray:
    """Values stretched from their own minimum and maximum to 0..255, band by band: `values_of(rows)` gives
    the float64 values of a band of rows (a fresh array, consumed here). `invert` mirrors the values in
    their range first (MONOCHROME1: bright bone is stored low)."""
    bands = [slice(start, start + BAND_ROWS) for start in range(0, rows, BAND_ROWS)]
    low, high = np.inf, -np.inf
    for band in bands:
        values = values_of(band)
        low, high = min(low, float(np.min(values))), max(high, float(np.max(values)))
    total = high + low
    if invert:
        # The mirrored values' minimum and maximum: subtraction is monotonic, rounding included.
        low, high = total - high, total - low
    if high <= low:
        return np.zeros((rows, *values.shape[1:]), dtype=np.uint8)
    out = np.empty((rows, *values.shape[1:]), dtype=np.uint8)
    for band in bands:
        values = values_of(band)
        if invert:
            np.subtract(total, values, out=values)
        values -= low
        values *= 255.0 / (high - low)
        np.rint(values, out=values)
        np.clip(values, 0, 255, out=values)
        out[band] = values
    return out


def _decode_dicom(data: bytes, window_source_side: int | None = None) -> DecodedImage:
    """pydicom raises many types for broken files, and reads elements lazily: a corrupt one can fail
    at dcmread or at any later access. Every such failure is a refusal, never a crash."""
    try:
        return _read_dicom(data, window_source_side)
    except ImageDecodeError:
        raise
    except Exception as exc:
        raise ImageDecodeError("The DICOM file is truncated or corrupt.") from exc


def _read_dicom(data: bytes, window_source_side: int | None = None) -> DecodedImage:
    import pydicom  # lazy: only DICOM uploads pay for it
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(io.BytesIO(data))  # a broken file: _decode_dicom refuses it
    if "PixelData" not in ds:
        raise ImageDecodeError("DICOM object has no pixel data (it is not an image).")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise ImageDecodeError("Multi-frame DICOM is not supported; upload a single radiograph.")
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    if rows * cols > MAX_PIXELS:
        raise ImageDecodeError(f"The image is too large ({cols}x{rows} pixels).")
    _check_decoded_bytes(_dicom_decoded_bytes(ds))
    try:
        raw = ds.pixel_array
    except Exception as exc:  # missing codec, truncated pixel data, bad header
        raise ImageDecodeError(
            "The DICOM pixel data cannot be decoded (truncated file or unsupported "
            f"compression, transfer syntax {ds.file_meta.get('TransferSyntaxUID', '?')})."
        ) from exc
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    window_source = None
    if window_source_side and raw.ndim == 2:
        window_source = _window_source(raw, ds, window_source_side, monochrome1=photometric == "MONOCHROME1")
    if raw.ndim == 3:
        if photometric.startswith("MONOCHROME"):
            raise ImageDecodeError("Multi-frame DICOM is not supported; upload a single radiograph.")
        # Colour DICOM (secondary capture): luma, as for colour JPEG.
        luma = np.array([0.299, 0.587, 0.114])
        chroma = colourfulness(raw)
        pixels = _stretch_to_uint8(raw.shape[0], lambda band: raw[band, :, :3].astype(np.float64) @ luma)
    else:
        chroma = 0.0

        def values_of(band: slice) -> np.ndarray:
            values = apply_voi_lut(apply_modality_lut(raw[band], ds), ds)
            # A copy of our own to scale in place (the LUTs may hand back `raw` itself).
            return values.astype(np.float64, copy=np.shares_memory(values, raw) or values.dtype != np.float64)

        # MONOCHROME1 stores bright bone as low values; invert, so films look like JPEGs.
        pixels = _stretch_to_uint8(raw.shape[0], values_of, invert=photometric == "MONOCHROME1")
    return DecodedImage(
        pixels=pixels,
        format="DICOM",
        width=cols,
        height=rows,
        metadata=_dicom_metadata(ds),
        chroma=chroma,
        window_source=window_source,
    )


def _window_source(raw: np.ndarray, ds: Dataset, side: int, *, monochrome1: bool) -> np.ndarray:
    """(h, w) uint16, h and w at most `side`: see DecodedImage.window_source. Averaged in blocks of the
    stored integers before anything is converted, so a large film costs a film-sized float array once
    at most `side` squared, not at full size."""
    from pydicom.pixels import apply_modality_lut

    factor = max(1, math.ceil(max(raw.shape) / side))
    height, width = max(1, raw.shape[0] // factor), max(1, raw.shape[1] // factor)
    blocks = raw[: height * factor, : width * factor].reshape(height, factor, width, factor)
    # Rounded back to the stored type: a modality LUT table is indexed by stored values.
    small = np.rint(blocks.mean(axis=(1, 3))).astype(raw.dtype)
    values = np.asarray(apply_modality_lut(small, ds), dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint16)
    scaled = np.rint((values - low) * (65535.0 / (high - low))).astype(np.uint16)
    if monochrome1:  # bright bone is stored low: display orientation, as the 8-bit pixels
        np.subtract(65535, scaled, out=scaled)
    return scaled


def apply_display_window(window_source: np.ndarray, *, centre: float, width: float) -> np.ndarray:
    """A DICOM film's window source (DecodedImage.window_source) through a linear window whose centre
    and width are percent of its range (0 = darkest, 100 = brightest as displayed) -> (h, w) uint8."""
    values = window_source.astype(np.float64) * (100.0 / 65535.0)
    low = centre - width / 2.0
    scaled = np.clip((values - low) / width, 0.0, 1.0) * 255.0
    return np.rint(scaled).astype(np.uint8)


def _dicom_metadata(ds: object) -> dict[str, str]:
    found: dict[str, str] = {}
    for tag in DICOM_METADATA_TAGS:
        value = getattr(ds, tag, None)
        if value not in (None, ""):
            found[tag] = str(value)
    return found
