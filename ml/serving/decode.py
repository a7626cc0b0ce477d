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
import os
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ml.serving.codestream import (
    J2K_MAGIC,
    JP2_MAGIC,
    CodestreamError,
    CodestreamSize,
    InflateLimitExceeded,
    exif_orientation,
    inflate_bounded,
    j2k_size,
    jpeg_size,
    png_header,
)

if TYPE_CHECKING:
    from pydicom import Dataset
    from pydicom.dataset import FileDataset

# Anything bigger is not a plain chest film; refuse it before decoding (decompression bombs).
MAX_PIXELS = 60_000_000
# And the decoded pixel data (rows x columns x samples x bytes per sample), counted before decoding:
# a 7745x7745 16-bit RGB DICOM is 360 MB although it has fewer pixels than MAX_PIXELS. A full-size
# 16-bit chest film (4280x3520) is 30 MB.
MAX_DECODED_BYTES = 48 * 1024 * 1024
# What Pillow holds per pixel in each mode (it keeps RGB, YCbCr and LA in four bytes).
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "LA": 4, "PA": 4, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2,
                    "RGB": 4, "YCbCr": 4, "RGBA": 4, "CMYK": 4, "I": 4, "F": 4}  # fmt: skip
# A Deflated Explicit VR Little Endian DICOM is inflated up to this many bytes and refused past it
# (the pixel data limit and room for a header): environment DICOM_MAX_INFLATED_BYTES.
MAX_INFLATED_BYTES = int(os.environ.get("DICOM_MAX_INFLATED_BYTES") or MAX_DECODED_BYTES + 16 * 1024 * 1024)
# Longer side over shorter side: a chest film is about 1.3, a stitched long-leg or spine film under 4. A
# 65535x383 strip is not a film, and its long side costs the decode's working memory.
MAX_ASPECT_RATIO = 6
ASPECT_CHECKED_PIXELS = 1_000_000  # a small strip costs nothing (and the input gate refuses it)
# A JPEG 2000 decoder keeps state per tile: a film has one or a few hundred, a tile bomb millions.
MAX_J2K_TILES = 4096
# Pillow's own decompression-bomb check from the same limit (a warning above it, an error above twice it;
# decode_image_bytes treats the warning as the error).
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"

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
    read from the image data's own header (a DICOM film's codestream, not only its Rows and Columns); a
    big JPEG at the reduced DCT scale decode_image_bytes would use. 0 for a file no header describes, or
    one whose header lies (the decode refuses it at once, before any pixel is decoded)."""
    try:
        fmt = detect_format(data)
        if fmt == "DICOM":
            return dicom_true_decoded_bytes(read_dicom_dataset(data))
        if fmt == "PNG":
            return png_header(data).decoded_bytes
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
            return _raster_decoded_bytes(image, fmt, target_size)
    except Exception:  # noqa: BLE001 - any unreadable or lying header: the decode refuses it before decoding
        return 0


def read_dicom_metadata(data: bytes) -> dict[str, str] | None:
    """The tags DecodedImage.metadata holds, from the header alone (no pixel is decoded; a deflated file
    is inflated within MAX_INFLATED_BYTES); None for a file that is not DICOM. ImageDecodeError for a
    DICOM file whose header cannot be read."""
    if not data or detect_format(data) != "DICOM":
        return None
    try:
        return _dicom_metadata(read_dicom_dataset(data, stop_before_pixels=True))
    except ImageDecodeError:
        raise
    except Exception as exc:  # pydicom raises many types for broken headers
        raise ImageDecodeError("The DICOM file is truncated or corrupt.") from exc


def read_dicom_dataset(
    data: bytes, *, stop_before_pixels: bool = False, specific_tags: list[str] | None = None
) -> FileDataset:
    """``pydicom.dcmread`` of a DICOM file's bytes, except that a Deflated Explicit VR Little Endian dataset
    is inflated here in steps and refused (ImageDecodeError) once its inflated length passes
    MAX_INFLATED_BYTES, before pydicom builds anything (pydicom inflates the whole file at once). Every
    read of an untrusted DICOM file goes through this. pydicom's own errors pass through."""
    import pydicom
    from pydicom.dataset import FileDataset
    from pydicom.filereader import _at_pixel_data, _read_file_meta_info, read_dataset, read_preamble
    from pydicom.tag import Tag

    source = io.BytesIO(data)
    preamble = read_preamble(source, force=False)
    file_meta = _read_file_meta_info(source)
    if str(file_meta.get("TransferSyntaxUID", "")) != DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=stop_before_pixels, specific_tags=specific_tags)
    try:
        inflated = inflate_bounded(memoryview(data)[source.tell() :], limit=MAX_INFLATED_BYTES)
    except InflateLimitExceeded as exc:
        raise ImageDecodeError(
            f"The deflated DICOM file inflates to more than {MAX_INFLATED_BYTES // 2**20} MB, more than a "
            "film holds; it was refused before it was read."
        ) from exc
    except CodestreamError as exc:
        raise ImageDecodeError("The DICOM file is truncated or corrupt (its deflated data cannot be read).") from exc
    dataset = read_dataset(
        inflated,
        is_implicit_VR=False,
        is_little_endian=True,
        stop_when=_at_pixel_data if stop_before_pixels else None,
        specific_tags=None if specific_tags is None else [Tag(keyword) for keyword in specific_tags],
    )
    read = FileDataset(inflated, dataset, preamble=preamble, file_meta=file_meta)
    read.set_original_encoding(False, True, dataset._character_set)
    return read


def dicom_true_decoded_bytes(ds: Dataset) -> int:
    """What decoding a DICOM dataset's pixel data holds, every frame, from the image data itself: each
    frame's codestream header (JPEG SOF, JPEG-LS, JPEG 2000 SIZ) is read and compared with the header's
    Rows, Columns, SamplesPerPixel and BitsAllocated; ImageDecodeError when they disagree (the decoder
    believes the codestream) or the data holds another number of frames than NumberOfFrames. Uncompressed
    data is what the header says (pydicom reads no more)."""
    header_bytes = _dicom_decoded_bytes(ds) * _dicom_frames(ds)
    syntax = ds.file_meta.get("TransferSyntaxUID") if "file_meta" in dir(ds) else None
    if syntax is None or not syntax.is_compressed or "PixelData" not in ds:
        return header_bytes
    if str(syntax) == RLE_LOSSLESS:
        _check_rle_frames(ds)
        return header_bytes
    from pydicom.encaps import generate_fragmented_frames

    frames = _dicom_frames(ds)
    total = 0
    seen = 0
    for fragments in generate_fragmented_frames(ds.PixelData, number_of_frames=frames):
        seen += 1
        if seen > frames:
            raise ImageDecodeError(
                f"The DICOM header says {_frames_words(frames)} but the image data holds more; the file was refused."
            )
        size = _frame_codestream(fragments)
        _compare_with_header(ds, size)
        if size.tiles > MAX_J2K_TILES:
            raise ImageDecodeError(
                f"The JPEG 2000 image data is cut into {size.tiles:,} tiles (limit {MAX_J2K_TILES:,}); "
                "the file was refused before it was decoded."
            )
        total += size.decoded_bytes
    if seen < frames:
        raise ImageDecodeError(
            f"The DICOM header says {_frames_words(frames)} but the image data holds {seen}; the file was refused."
        )
    return max(total, header_bytes)


def _dicom_frames(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        raise ImageDecodeError("The DICOM header's NumberOfFrames is not a number.") from None


def _frames_words(count: int) -> str:
    return "1 frame" if count == 1 else f"{count} frames"


# How much of a frame's first fragments is read for its codestream header.
CODESTREAM_HEAD_BYTES = 1 << 20


def _frame_codestream(fragments: tuple[bytes, ...]) -> CodestreamSize:
    head = b""
    for fragment in fragments:
        head += fragment[: CODESTREAM_HEAD_BYTES - len(head)]
        if len(head) >= CODESTREAM_HEAD_BYTES:
            break
    try:
        if head[:4] == J2K_MAGIC or head[:12] == JP2_MAGIC:
            return j2k_size(head)
        if head[:2] == b"\xff\xd8":
            return jpeg_size(head)
    except CodestreamError as exc:
        raise ImageDecodeError(f"The DICOM image data cannot be read: {exc}.") from exc
    raise ImageDecodeError("The DICOM image data is in a compression the portal cannot check or decode.")


def _compare_with_header(ds: Dataset, size: CodestreamSize) -> None:
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    samples, bits = int(ds.get("SamplesPerPixel", 1) or 1), int(ds.get("BitsAllocated", 16) or 16)
    lies = []
    if (size.width, size.height) != (cols, rows):
        lies.append((f"{cols}x{rows}", f"{size.width}x{size.height}"))
    if size.components != samples:
        lies.append((f"{samples} samples per pixel", f"{size.components}"))
    if size.precision > bits:
        lies.append((f"{bits}-bit", f"{size.precision}-bit"))
    if lies:
        said = ", ".join(header for header, _ in lies)
        real = ", ".join(data for _, data in lies)
        raise ImageDecodeError(
            f"The DICOM header says {said} but the image data ({size.kind}) is {real}; the file was refused "
            "before it was decoded."
        )


def _check_rle_frames(ds: Dataset) -> None:
    """An RLE frame's segments, each decoded by pydicom into a growing buffer with no bound: each must
    decode to no more than Rows x Columns bytes, counted from its run headers without producing a byte."""
    from pydicom.encaps import generate_frames

    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    expected = rows * cols
    for frame in generate_frames(ds.PixelData, number_of_frames=_dicom_frames(ds)):
        if len(frame) < 64:
            raise ImageDecodeError("The DICOM RLE image data is truncated.")
        header = struct.unpack("<16I", frame[:64])
        offsets = [offset for offset in header[1 : 1 + header[0]]] + [len(frame)]
        for start, end in zip(offsets, offsets[1:], strict=False):
            # Encoders pad a segment to an even length: a run of slack, never a bomb.
            if _rle_segment_length(memoryview(frame)[start:end], stop_after=expected + 256) > expected + 256:
                raise ImageDecodeError(
                    f"The DICOM RLE image data decodes to more than the header's {cols}x{rows}; the file "
                    "was refused before it was decoded."
                )


def _rle_segment_length(segment: memoryview, *, stop_after: int) -> int:
    """The length a PackBits segment decodes to, stopping once it passes `stop_after`."""
    length = position = 0
    size = len(segment)
    while position < size and length <= stop_after:
        control = segment[position]
        if control < 128:  # a literal run of control + 1 bytes
            length += control + 1
            position += control + 2
        elif control > 128:  # one byte repeated 257 - control times
            length += 257 - control
            position += 2
        else:
            position += 1
    return length


def _decode_raster(data: bytes, fmt: str, target_size: int | None) -> DecodedImage:
    with warnings.catch_warnings():
        # A bomb warning means an absurd pixel count: treat it as the error it is.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            if fmt == "PNG":
                # IHDR and the EXIF orientation from the chunks: nothing is decoded before the checks
                # (Pillow's getexif decodes a whole PNG to look for an eXIf chunk after the pixels).
                png = png_header(data)
                _check_shape(png.width, png.height)
                _check_decoded_bytes(png.decoded_bytes)
            image: Image.Image = Image.open(io.BytesIO(data))
            width, height = image.size
            _check_shape(width, height)
            orientation = png.orientation if fmt == "PNG" else image.getexif().get(EXIF_ORIENTATION, 1)
            if fmt == "PNG" and orientation == 1 and "Raw profile type exif" in image.info:
                orientation = _raw_profile_orientation(str(image.info["Raw profile type exif"]))
            # Before _raster_decoded_bytes sets a JPEG to decode as luma only (the pixels training saw).
            jpeg_chroma = _jpeg_chroma(data) if fmt == "JPEG" and image.mode != "L" else None
            _check_decoded_bytes(_raster_decoded_bytes(image, fmt, target_size))
            image.load()
            chroma = colourfulness(image) if jpeg_chroma is None else jpeg_chroma
            gray = _to_gray(image)
            del image
            gray = _orient(gray, orientation)
        except ImageDecodeError:
            raise
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise ImageDecodeError("The image is too large to process safely.") from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageDecodeError("The image is truncated or corrupt.") from exc
    if orientation in (5, 6, 7, 8):  # report the original size in display orientation
        width, height = height, width
    return DecodedImage(pixels=gray, format=fmt, width=width, height=height, metadata={}, chroma=chroma)


def _check_shape(width: int, height: int) -> None:
    """Pixel count and aspect ratio, from a header, before anything is decoded."""
    if width * height > MAX_PIXELS:
        raise ImageDecodeError(f"The image is too large ({width}x{height} pixels; limit {MAX_PIXELS:,}).")
    if min(width, height) <= 0:
        raise ImageDecodeError("The image has no pixels.")
    if width * height > ASPECT_CHECKED_PIXELS and max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageDecodeError(
            f"The image is {width}x{height} pixels, longer than a radiograph can be (sides at most "
            f"{MAX_ASPECT_RATIO}:1)."
        )


def _raw_profile_orientation(profile: str) -> int:
    """ImageMagick's "Raw profile type exif" PNG text chunk (hex after three header lines)."""
    try:
        return exif_orientation(bytes.fromhex("".join(profile.split("\n")[3:])))
    except ValueError:
        return 1


# EXIF orientation -> the numpy view that puts a stored image upright (as ImageOps.exif_transpose would).
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1, :],
    5: lambda a: a.T,
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].T,
    8: lambda a: np.rot90(a, 1),
}


def _orient(gray: np.ndarray, orientation: int) -> np.ndarray:
    """The 8-bit result turned upright: one byte a pixel, where turning the decoded image would copy it
    in its own mode (four bytes a pixel for RGB)."""
    turn = _ORIENT.get(orientation)
    return gray if turn is None else np.ascontiguousarray(turn(gray))


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
        # Through a 256-entry table (the palette's luma, as P -> RGBA -> L gives it): never RGBA, which
        # holds four bytes a pixel (a 6900x6900 palette PNG: 190 MB).
        strip = Image.frombytes("P", (256, 1), bytes(range(256)))
        strip.putpalette(image.getpalette(rawmode="RGBA") or [], rawmode="RGBA")
        table = np.asarray(strip.convert("RGBA").convert("L"), dtype=np.uint8)[0]
        indices = np.asarray(image)
        gray = np.empty(indices.shape, dtype=np.uint8)
        for start in range(0, len(indices), BAND_ROWS):  # a lookup casts its indices to int64: by bands
            gray[start : start + BAND_ROWS] = table[indices[start : start + BAND_ROWS]]
        return gray
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
    from pydicom.pixels import apply_modality_lut, apply_voi_lut  # lazy: only DICOM uploads pay for it

    ds = read_dicom_dataset(data)  # a broken file: _decode_dicom refuses it
    if "PixelData" not in ds:
        raise ImageDecodeError("DICOM object has no pixel data (it is not an image).")
    if _dicom_frames(ds) > 1:
        raise ImageDecodeError("Multi-frame DICOM is not supported; upload a single radiograph.")
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    _check_shape(cols, rows)
    # The header's size, then what the image data itself decodes to (refused when it says otherwise).
    _check_decoded_bytes(_dicom_decoded_bytes(ds))
    _check_decoded_bytes(dicom_true_decoded_bytes(ds))
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
