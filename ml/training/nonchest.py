"""The project's own corpus of files that are not frontal chest radiographs, for the input gate.

``python -m ml gate --make-corpus DIR`` writes it; ``python -m ml gate --report`` runs the gate on
it. Everything is made here, deterministically, from numpy, Pillow and pydicom, plus the photographs
scikit-image ships (a development requirement; skipped with a note where it is not installed):
other modalities in DICOM (CT, MR, ultrasound, a hand radiograph, a lateral chest film), the same
slices as PNG without a header, photographs, documents, logos, synthetic pictures and tiny images.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SKIMAGE_PHOTOS = (
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "chessboard_GRAY.png", "clock_motion.png",
    "coffee.png", "coins.png", "color.png", "grass.png", "gravel.png", "horse.png", "hubble_deep_field.jpg", "ihc.png",
    "logo.png", "microaneurysms.png", "moon.png", "motorcycle_left.png", "page.png", "phantom.png", "retina.jpg",
    "rocket.jpg", "text.png",
)  # fmt: skip


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB" if image.mode not in ("L", "RGB") else image.mode).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def dicom_file(
    pixels: np.ndarray | None,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    frames: int = 1,
    **tags: object,
) -> bytes:
    """A DICOM Part 10 file (explicit VR little endian) of 16-bit monochrome ``pixels`` (None: a header
    with no pixel data) and the given tags (Modality, RescaleSlope, WindowCenter, ...). The corpus here
    and the tests (tests/images.py) write their DICOM files with it."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    for name, value in tags.items():
        setattr(ds, name, value)
    if pixels is not None:
        arr = np.asarray(pixels, dtype=np.uint16)
        ds.Rows, ds.Columns = arr.shape[-2:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
        if frames > 1:
            ds.NumberOfFrames = frames
            arr = np.stack([arr] * frames)
        ds.PixelData = arr.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size] / size
    return yy - 0.5, xx - 0.5


def ct_slice(size: int = 512, seed: int = 0) -> np.ndarray:
    """An axial chest CT slice: an oval body in air, two dark lungs, a bright spine."""
    rng = np.random.default_rng(seed)
    yy, xx = _grid(size)
    image = np.zeros((size, size)) + 24
    image[(xx / 0.45) ** 2 + (yy / 0.33) ** 2 < 1] = 1040
    for side in (-0.2, 0.2):
        image[((xx - side) / 0.15) ** 2 + ((yy + 0.02) / 0.22) ** 2 < 1] = 180
    image[(xx / 0.05) ** 2 + ((yy - 0.22) / 0.05) ** 2 < 1] = 2000
    return np.clip(image + rng.normal(0, 20, image.shape), 0, 4095)


def mr_slice(size: int = 256, seed: int = 1) -> np.ndarray:
    """An axial brain MR slice: a bright ring (scalp), gray matter, dark ventricles."""
    rng = np.random.default_rng(seed)
    yy, xx = _grid(size)
    radius = np.hypot(xx / 0.42, yy / 0.46)
    image = np.where(radius < 1, 1400.0, 10.0)
    image[radius < 0.9] = 900
    image[(np.abs(xx) < 0.06) & (np.abs(yy) < 0.15)] = 200
    return np.clip(image + rng.normal(0, 30, image.shape), 0, 4095)


def ultrasound(size: int = 400, seed: int = 2) -> np.ndarray:
    """A speckled ultrasound fan on black."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    angle, depth = np.arctan2(xx - 0.5, yy + 0.05), np.hypot(xx - 0.5, yy + 0.05)
    fan = (np.abs(angle) < 0.6) & (depth < 0.95)
    return np.where(fan, rng.gamma(2.0, 500.0, (size, size)), 0).clip(0, 4095)


def hand_radiograph(size: int = 512) -> np.ndarray:
    """A hand radiograph: bright finger bones on a dark field."""
    image = np.zeros((size, size)) + 200
    canvas = Image.fromarray(np.zeros((size, size), dtype=np.uint8))
    pen = ImageDraw.Draw(canvas)
    pen.rectangle([size * 0.3, size * 0.55, size * 0.7, size * 0.95], fill=120)
    for i in range(5):
        x = size * (0.28 + 0.1 * i)
        pen.rounded_rectangle([x, size * 0.1, x + size * 0.06, size * 0.58], radius=8, fill=180)
    return image + np.asarray(canvas, dtype=np.float64) * 12


def letter(size: tuple[int, int] = (850, 1100), seed: int = 3) -> Image.Image:
    """A scanned letter: black lines of text on off-white paper."""
    rng = np.random.default_rng(seed)
    page = Image.new("L", size, 242)
    pen = ImageDraw.Draw(page)
    words = "Dear colleague thank you for referring this patient to our clinic regarding the cough".split()
    for line in range(40):
        text = " ".join(rng.choice(words, size=9))
        pen.text((70, 80 + line * 24), text, fill=20)
    return page


def logo(colour: bool) -> Image.Image:
    image = Image.new("RGB", (400, 400), (255, 255, 255))
    pen = ImageDraw.Draw(image)
    pen.ellipse([60, 60, 340, 340], fill=(200, 30, 40) if colour else (40, 40, 40))
    pen.rectangle([170, 100, 230, 300], fill=(255, 255, 255))
    pen.rectangle([100, 170, 300, 230], fill=(255, 255, 255))
    return image if colour else image.convert("L")


def colourful_picture(seed: int = 4) -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (640, 480), tuple(int(v) for v in rng.integers(0, 255, 3)))
    pen = ImageDraw.Draw(image)
    for _ in range(40):
        x, y = int(rng.integers(0, 640)), int(rng.integers(0, 480))
        r = int(rng.integers(10, 120))
        pen.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return image


def corpus_files() -> dict[str, Callable[[], bytes]]:
    """name -> a function making the file's bytes."""
    rng = np.random.default_rng(7)
    ct, mr = ct_slice(), mr_slice()
    gray = lambda values: Image.fromarray(  # noqa: E731 - 12-bit -> 8-bit for the header-less copies
        (np.asarray(values) / max(1.0, float(np.max(values))) * 255).astype(np.uint8)
    )
    files: dict[str, Callable[[], bytes]] = {
        "ct-chest-slice.dcm": lambda: dicom_file(ct, Modality="CT", BodyPartExamined="CHEST"),
        "mr-brain-slice.dcm": lambda: dicom_file(mr, Modality="MR", BodyPartExamined="HEAD"),
        "ultrasound.dcm": lambda: dicom_file(ultrasound(), Modality="US"),
        "hand-radiograph.dcm": lambda: dicom_file(hand_radiograph(), Modality="CR", BodyPartExamined="HAND"),
        "no-modality.dcm": lambda: dicom_file(ct),
        "lateral-chest-cr.dcm": lambda: dicom_file(
            ct_slice(seed=9), Modality="CR", BodyPartExamined="CHEST", ViewPosition="LL"
        ),
        "ct-chest-slice.png": lambda: _png(gray(ct)),
        "mr-brain-slice.png": lambda: _png(gray(mr)),
        "ultrasound.jpeg": lambda: _jpeg(gray(ultrasound())),
        "hand-radiograph.png": lambda: _png(gray(hand_radiograph())),
        "letter.png": lambda: _png(letter()),
        "letter.jpeg": lambda: _jpeg(letter()),
        "logo-colour.png": lambda: _png(logo(True)),
        "logo-gray.png": lambda: _png(logo(False)),
        "colourful-picture.jpeg": lambda: _jpeg(colourful_picture()),
        "pixel-1x1.png": lambda: _png(Image.new("L", (1, 1), 128)),
        "tiny-32x32.png": lambda: _png(Image.new("L", (32, 32), 90)),
        "flat-gray.png": lambda: _png(Image.new("L", (512, 512), 128)),
        "flat-black.jpeg": lambda: _jpeg(Image.new("L", (512, 512), 0)),
        "noise-uniform.png": lambda: _png(Image.fromarray(rng.integers(0, 256, (512, 512), dtype=np.uint8))),
        "noise-gaussian.jpeg": lambda: _jpeg(
            Image.fromarray(np.clip(rng.normal(128, 40, (512, 512)), 0, 255).astype(np.uint8))
        ),
        "noise-colour.png": lambda: _png(Image.fromarray(rng.integers(0, 256, (300, 300, 3), dtype=np.uint8))),
        "gradient.png": lambda: _png(Image.fromarray(np.tile(np.linspace(0, 255, 512), (512, 1)).astype(np.uint8))),
        "banner.png": lambda: _png(Image.fromarray(rng.integers(90, 160, (120, 1200), dtype=np.uint8))),
    }
    try:
        import skimage.data
    except ImportError:
        return files
    photos = Path(skimage.data.__file__).parent
    for name in SKIMAGE_PHOTOS:
        if (photos / name).is_file():
            files[f"skimage-{name}"] = functools.partial(Path.read_bytes, photos / name)
            files[f"skimage-gray-{Path(name).stem}.png"] = functools.partial(_gray_png, photos / name)
    return files


def _gray_png(path: Path) -> bytes:
    return _png(Image.open(path).convert("L"))


def write_corpus(directory: str | Path) -> list[Path]:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in sorted(corpus_files().items()):
        path = directory / name
        path.write_bytes(make())
        written.append(path)
    return written
