"""What a file's image data really is, read from the bytes themselves before any pixel is decoded.

A container says one thing (a DICOM header's Rows and Columns, an upload's name), the codestream inside
it another, and the decoder believes only the codestream: a JPEG 2000 frame under a 512x512 DICOM header
can still decode to 16000x16000. So every limit is checked against what the decoder will produce, read
here from the codestream's own header: a JPEG's SOF marker (every SOFn, lossless and JPEG-LS included), a
JPEG 2000 SIZ marker (bare codestream or JP2 file), a PNG's IHDR and, for a PNG, its EXIF orientation from
the chunks (Pillow's ``getexif`` decodes the whole image to find an eXIf chunk after the pixel data).

And a Deflated Explicit VR Little Endian DICOM is inflated here with a cap, in steps, so a 600 KB file
that inflates to 600 MB is refused once the inflated length passes the cap, never held whole.

Nothing here decodes a pixel; every parser reads a bounded number of bytes and raises ``CodestreamError``
(a ValueError) on a header it cannot read.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass


class CodestreamError(ValueError):
    """The image data's own header cannot be read (truncated, corrupt or of no known kind)."""


class InflateLimitExceeded(ValueError):
    """A deflated dataset inflates past the cap; `limit` is that cap in bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"inflates past {limit} bytes")


@dataclass(frozen=True)
class CodestreamSize:
    """The image a codestream decodes to: its own header's width, height, components and bits."""

    kind: str  # "JPEG", "JPEG-LS", "JPEG 2000", "PNG"
    width: int
    height: int
    components: int
    precision: int  # bits per sample
    tiles: int = 1  # JPEG 2000 only: the decoder keeps state per tile

    @property
    def bytes_per_sample(self) -> int:
        return max(1, (self.precision + 7) // 8)

    @property
    def decoded_bytes(self) -> int:
        return self.width * self.height * self.components * self.bytes_per_sample


# -- JPEG (ISO 10918, lossless included; JPEG-LS, ISO 14495) ------------------------------------------------

# Every start-of-frame marker: baseline, extended, progressive and lossless, Huffman or arithmetic coded
# (C4 is DHT, C8 reserved, CC is DAC), and JPEG-LS's F7.
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RSTn: no length follows


def jpeg_size(data: bytes | memoryview) -> CodestreamSize:
    """A JPEG or JPEG-LS codestream's frame header (SOFn), read by walking the marker segments."""
    view = memoryview(data)
    if bytes(view[:2]) != b"\xff\xd8":
        raise CodestreamError("not a JPEG codestream (no SOI marker)")
    offset = 2
    while offset + 4 <= len(view):
        if view[offset] != 0xFF:
            raise CodestreamError("JPEG marker expected")
        marker = view[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in _STANDALONE:
            offset += 2
            continue
        if marker in (0xD9, 0xDA):  # EOI or SOS before any frame header
            break
        (length,) = struct.unpack(">H", view[offset + 2 : offset + 4])
        if marker in _SOF_MARKERS:
            if length < 8 or offset + 2 + 8 > len(view):
                raise CodestreamError("truncated JPEG frame header")
            precision, height, width, components = struct.unpack(">BHHB", view[offset + 4 : offset + 10])
            kind = "JPEG-LS" if marker == 0xF7 else "JPEG"
            if height == 0:
                # A DNL marker gives the height later (never in DICOM); nothing bounds it here.
                raise CodestreamError("JPEG frame header without a height (DNL)")
            return CodestreamSize(kind, width, height, components, precision)
        if length < 2:
            raise CodestreamError("JPEG marker segment with a bad length")
        offset += 2 + length
    raise CodestreamError("no JPEG frame header (SOF marker) before the image data")


# -- JPEG 2000 (ISO 15444-1): a bare codestream or a JP2 file ----------------------------------------------

J2K_MAGIC = b"\xff\x4f\xff\x51"  # SOC then SIZ: a codestream's first two markers
JP2_MAGIC = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


def j2k_size(data: bytes | memoryview) -> CodestreamSize:
    """A JPEG 2000 codestream's image size from its SIZ marker (the first after SOC, as the standard
    requires), or a JP2 file's, from the codestream in its jp2c box."""
    view = memoryview(data)
    if bytes(view[:12]) == JP2_MAGIC:
        view = _jp2_codestream(view)
    if bytes(view[:4]) != J2K_MAGIC:
        raise CodestreamError("not a JPEG 2000 codestream (no SOC and SIZ markers)")
    if len(view) < 4 + 40:
        raise CodestreamError("truncated JPEG 2000 SIZ marker")
    (lsiz, _rsiz, xsiz, ysiz, xosiz, yosiz, xtsiz, ytsiz, xtosiz, ytosiz, csiz) = struct.unpack(
        ">HHIIIIIIIIH", view[4:42]
    )
    if csiz == 0 or lsiz != 38 + 3 * csiz or len(view) < 4 + lsiz:
        raise CodestreamError("JPEG 2000 SIZ marker with a bad length")
    if xsiz <= xosiz or ysiz <= yosiz or xtsiz == 0 or ytsiz == 0 or xtosiz > xosiz or ytosiz > yosiz:
        raise CodestreamError("JPEG 2000 SIZ marker with an empty image or tile grid")
    precision = 0
    width = height = 0
    for index in range(csiz):
        ssiz, xrsiz, yrsiz = view[42 + 3 * index], view[43 + 3 * index], view[44 + 3 * index]
        if xrsiz == 0 or yrsiz == 0:
            raise CodestreamError("JPEG 2000 component with a zero subsampling")
        precision = max(precision, (ssiz & 0x7F) + 1)
        # The decoder's output grid is the reference grid; a subsampled component is smaller.
        width = max(width, -(-xsiz // xrsiz) - -(-xosiz // xrsiz))
        height = max(height, -(-ysiz // yrsiz) - -(-yosiz // yrsiz))
    tiles = -(-(xsiz - xtosiz) // xtsiz) * -(-(ysiz - ytosiz) // ytsiz)
    return CodestreamSize("JPEG 2000", width, height, csiz, precision, tiles=tiles)


def _jp2_codestream(view: memoryview) -> memoryview:
    """The contiguous codestream box (jp2c) of a JP2 file, walking its top-level boxes."""
    offset = 0
    while offset + 8 <= len(view):
        length, box = struct.unpack(">I4s", view[offset : offset + 8])
        header = 8
        if length == 1:  # a 64-bit length follows
            if offset + 16 > len(view):
                break
            (length,) = struct.unpack(">Q", view[offset + 8 : offset + 16])
            header = 16
        elif length == 0:  # the last box, to the end of the file
            length = len(view) - offset
        if length < header:
            raise CodestreamError("JP2 box with a bad length")
        if box == b"jp2c":
            return view[offset + header : offset + length]
        offset += length
    raise CodestreamError("JP2 file without a codestream box")


# -- PNG --------------------------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# What Pillow holds per pixel for each colour type and bit depth: a palette image stays indexed (P, one
# byte; ml.serving.decode maps it to gray through a 256-entry table, never through RGBA), gray is L or
# I;16, and Pillow stores RGB, RGBA and LA in four bytes a pixel, 16-bit colour reduced to 8 bits.
_PNG_COLOUR_TYPES = {0: "gray", 2: "RGB", 3: "palette", 4: "gray+alpha", 6: "RGBA"}


@dataclass(frozen=True)
class PngHeader:
    width: int
    height: int
    bit_depth: int
    colour_type: int
    orientation: int = 1  # EXIF orientation (1: as stored)

    @property
    def mode_bytes_per_pixel(self) -> int:
        if self.colour_type in (0, 3):
            return 2 if self.bit_depth == 16 else 1
        return 4

    @property
    def decoded_bytes(self) -> int:
        return self.width * self.height * self.mode_bytes_per_pixel


def png_header(data: bytes | memoryview) -> PngHeader:
    """IHDR (width, height, bit depth, colour type) and the EXIF orientation, from the chunks alone: the
    chunk headers are walked and only IHDR and eXIf are read (an eXIf chunk may follow the pixel data)."""
    view = memoryview(data)
    if bytes(view[:8]) != PNG_SIGNATURE:
        raise CodestreamError("not a PNG file")
    if len(view) < 33 or bytes(view[12:16]) != b"IHDR":
        raise CodestreamError("PNG without an IHDR chunk first")
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", view[16:26])
    if width == 0 or height == 0 or colour_type not in _PNG_COLOUR_TYPES:
        raise CodestreamError("PNG IHDR with an empty image or an unknown colour type")
    orientation = 1
    offset = 33
    while offset + 8 <= len(view):
        length, chunk = struct.unpack(">I4s", view[offset : offset + 8])
        if chunk == b"eXIf":
            orientation = exif_orientation(view[offset + 8 : offset + 8 + length])
        if chunk == b"IEND":
            break
        offset += 12 + length
    return PngHeader(width, height, bit_depth, colour_type, orientation)


def exif_orientation(tiff: bytes | memoryview) -> int:
    """Tag 0x0112 of an EXIF block's first IFD (1 when absent or unreadable); reads the IFD's entries
    only, whatever the block's size."""
    view = memoryview(tiff)
    if bytes(view[:6]) == b"Exif\x00\x00":
        view = view[6:]
    order = {b"II": "<", b"MM": ">"}.get(bytes(view[:2]))
    if order is None or len(view) < 8:
        return 1
    (ifd,) = struct.unpack(order + "I", view[4:8])
    if ifd + 2 > len(view):
        return 1
    (count,) = struct.unpack(order + "H", view[ifd : ifd + 2])
    for index in range(min(count, 1024)):
        entry = ifd + 2 + 12 * index
        if entry + 12 > len(view):
            break
        tag, kind, _count = struct.unpack(order + "HHI", view[entry : entry + 8])
        if tag == 0x0112 and kind == 3:  # SHORT
            (value,) = struct.unpack(order + "H", view[entry + 8 : entry + 10])
            return value if 1 <= value <= 8 else 1
    return 1


# -- Deflate ----------------------------------------------------------------------------------------------

INFLATE_STEP = 1 << 20


def inflate_bounded(data: bytes | memoryview, *, limit: int) -> io.BytesIO:
    """Raw deflate (no zlib header, as DICOM's Deflated Explicit VR Little Endian) inflated step by step
    into a buffer (at its start); InflateLimitExceeded as soon as the output passes `limit` bytes, so no
    more than `limit` plus one step is ever held."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = io.BytesIO()
    view = memoryview(data)
    try:
        for start in range(0, len(view), INFLATE_STEP):
            pending: bytes | memoryview = view[start : start + INFLATE_STEP]
            while pending and not inflater.eof:
                out.write(inflater.decompress(pending, min(INFLATE_STEP, limit + 1 - out.tell())))
                if out.tell() > limit:
                    raise InflateLimitExceeded(limit)
                pending = inflater.unconsumed_tail
            if inflater.eof:
                break
        out.write(inflater.flush())
    except zlib.error as error:
        raise CodestreamError(f"the deflated data is corrupt ({error})") from None
    if out.tell() > limit:
        raise InflateLimitExceeded(limit)
    out.seek(0)
    return out
