"""The input gate: is this film something the model was made for? Checked before every score.

A film that fails is "not analysable" and is never scored. The checks run in this order and the
first failure is the reason given, in words a clinician understands:

1. DICOM header (``check_header``): Modality must be a radiograph (CR or DX), BodyPartExamined,
   when present, the chest, and ViewPosition not lateral. The study's own recorded view counts too.
2. Pixels (``check_pixels``), each a named check with its threshold below:
   ``resolution`` (shorter side, aspect ratio), ``colour`` (chroma of a colour photograph),
   ``flat`` (nearly uniform), ``dynamic_range`` (too little contrast, or mostly clipped),
   ``noise`` (no spatial structure: neighbouring pixels uncorrelated).
3. Learned (``ChestFilmCheck``): is this a frontal chest radiograph? The film's thumbnail is
   projected on the principal components of the training films; its distance from their
   distribution (reconstruction error and Mahalanobis distance) must stay within the 99.9th
   percentile seen on the training films themselves. The projection ships in the
   model artifact as ``gate.onnx`` and runs in ONNX Runtime (well under a millisecond).

No TensorFlow and no Django here. Fitting the learned check and reporting on a corpus are training's
(``ml.training.gate_fit``, ``python -m ml gate``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ml.serving.decode import DecodedImage

GATE_VERSION = "gate-v1"
GATE_FILE = "gate.onnx"

# DICOM: what the header must say. Values are compared upper-cased and stripped.
RADIOGRAPH_MODALITIES = ("CR", "DX")
CHEST_BODY_PARTS = ("CHEST", "THORAX", "LUNG", "CHEST_TO_PELVIS")
LATERAL_VIEWS = ("LL", "RL", "LAT", "LATERAL", "LLD", "RLD", "LLO", "RLO")
MODALITY_NAMES = {
    "CT": "a CT image",
    "MR": "an MR image",
    "US": "an ultrasound image",
    "NM": "a nuclear medicine image",
    "PT": "a PET image",
    "MG": "a mammogram",
    "XA": "an angiography image",
    "RF": "a fluoroscopy image",
    "OT": "an image of unspecified type ('other')",
    "SC": "a secondary capture",
    "DOC": "a document",
    "SR": "a structured report",
    "IO": "an intra-oral dental image",
    "PX": "a panoramic dental image",
    "ES": "an endoscopy image",
    "XC": "a photograph",
}

# Pixels: thresholds of the named checks (on the decoded 8-bit grayscale film).
MIN_SIDE = 128  # px: below this the lungs are a few dozen pixels wide (the model reads 128-224 px)
MAX_ASPECT = 2.5  # a chest film is between portrait 1:1.5 and landscape 1.5:1; banners are not
MAX_CHROMA = 12.0  # Hasler-Suesstrunk colourfulness: gray films 0-3, colour photographs 15-100+
MIN_STD = 6.0  # gray levels: a blank or flat-filled picture
MIN_RANGE = 48  # 2nd to 98th percentile, gray levels: a film with almost no contrast
MAX_CLIPPED = 0.6  # share of pixels at pure black or white: a saturated or mostly empty picture
MIN_STRUCTURE = 0.5  # mean correlation of neighbouring pixels at 128 px: films ~0.97, noise ~0
STRUCTURE_SIDE = 128

# Learned check: the thumbnail's side (the components and thresholds are fitted by ml.training.gate_fit).
THUMBNAIL_SIDE = 32


@dataclass(frozen=True)
class GateResult:
    """The gate's verdict for one film; ``measurements`` are recorded with it."""

    passed: bool
    code: str = ""  # the failed check's name, e.g. "dicom_modality", "colour", "not_chest_film"
    reason: str = ""  # for clinicians
    measurements: dict[str, Any] = field(default_factory=dict)


class GateError(RuntimeError):
    """The gate of an artifact is missing or does not match its manifest."""


def check_header(metadata: dict[str, str], *, is_dicom: bool, recorded_view: str = "") -> GateResult | None:
    """DICOM tags (and the study's recorded view): None if they allow a score, else the refusal.

    The tags are read to decide what the film is; they never decide who may see it. A DICOM file
    must say it is a radiograph (Modality is mandatory in DICOM); JPEG and PNG carry no tags.
    """
    modality = _tag(metadata, "Modality")
    if is_dicom and modality not in RADIOGRAPH_MODALITIES:
        what = MODALITY_NAMES.get(modality, f"of modality '{modality}'" if modality else "")
        said = f"says this is {what}" if what else "does not say it is a radiograph"
        return GateResult(
            False,
            "dicom_modality",
            f"The DICOM header {said}; the AI reads only chest radiographs (CR or DX).",
            {"Modality": modality},
        )
    body_part = _tag(metadata, "BodyPartExamined")
    if body_part and not any(part in body_part for part in CHEST_BODY_PARTS):
        return GateResult(
            False,
            "dicom_body_part",
            f"The DICOM header says the body part is '{body_part}', not the chest.",
            {"BodyPartExamined": body_part},
        )
    view = _tag(metadata, "ViewPosition")
    if view in LATERAL_VIEWS or recorded_view.strip().upper() in LATERAL_VIEWS:
        return GateResult(
            False,
            "lateral_view",
            "This is a lateral view; the AI reads only frontal (PA or AP) chest films.",
            {"ViewPosition": view or recorded_view},
        )
    return None


def _tag(metadata: dict[str, str], name: str) -> str:
    return str(metadata.get(name, "")).strip().upper()


def pixel_measurements(decoded: DecodedImage) -> dict[str, float]:
    """The figures the pixel checks compare with their thresholds (recorded per film)."""
    pixels = decoded.pixels
    height, width = pixels.shape
    small = _resized(pixels, STRUCTURE_SIDE).astype(np.float64)
    low, high = np.percentile(small, [2, 98])
    clipped = float(np.mean((small <= 1) | (small >= 254)))
    return {
        "width": int(decoded.width),
        "height": int(decoded.height),
        "aspect": round(max(width, height) / max(1, min(width, height)), 3),
        "chroma": round(float(decoded.chroma), 2),
        "std": round(float(small.std()), 2),
        "range_2_98": round(float(high - low), 1),
        "clipped": round(clipped, 3),
        "structure": round(_neighbour_correlation(small), 3),
    }


def check_pixels(decoded: DecodedImage, measured: dict[str, float]) -> GateResult | None:
    """The named pixel checks, in order; None if all pass."""
    if min(decoded.width, decoded.height) < MIN_SIDE:
        return GateResult(
            False,
            "resolution",
            f"The image is too small to read ({decoded.width}x{decoded.height} pixels; "
            f"at least {MIN_SIDE} pixels on the shorter side are needed).",
            measured,
        )
    if measured["aspect"] > MAX_ASPECT:
        return GateResult(
            False,
            "resolution",
            "The image's shape (far wider than tall, or the reverse) is not a chest film's.",
            measured,
        )
    if measured["chroma"] > MAX_CHROMA:
        return GateResult(
            False, "colour", "This is a colour picture, not a radiograph (X-ray films are grayscale).", measured
        )
    if measured["std"] < MIN_STD:
        return GateResult(False, "flat", "The image is blank or nearly uniform: there is no film to read.", measured)
    if measured["range_2_98"] < MIN_RANGE or measured["clipped"] > MAX_CLIPPED:
        return GateResult(
            False,
            "dynamic_range",
            "The image has too little contrast (washed out, under- or over-exposed) to be read.",
            measured,
        )
    if measured["structure"] < MIN_STRUCTURE:
        return GateResult(
            False, "noise", "The image looks like noise: it has none of the structure of a radiograph.", measured
        )
    return None


def _resized(pixels: np.ndarray, side: int) -> np.ndarray:
    return np.asarray(Image.fromarray(pixels).resize((side, side), Image.Resampling.BOX), dtype=np.uint8)


def _neighbour_correlation(values: np.ndarray) -> float:
    def corr(a: np.ndarray, b: np.ndarray) -> float:
        a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
        denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
        return float((a * b).sum() / denominator) if denominator else 0.0

    return (corr(values[:, 1:], values[:, :-1]) + corr(values[1:, :], values[:-1, :])) / 2


def thumbnail_vector(pixels: np.ndarray) -> np.ndarray:
    """(H, W) uint8 -> (THUMBNAIL_SIDE², ) float32, zero mean and unit variance (exposure-free).

    The same function feeds the fit (training films) and the check (served films).
    """
    thumb = _resized(pixels, THUMBNAIL_SIDE).astype(np.float32).ravel()
    std = float(thumb.std())
    return (thumb - thumb.mean()) / (std if std > 1e-6 else 1.0)


class ChestFilmCheck:
    """The learned check, from an artifact's ``gate.onnx`` and its manifest entry."""

    def __init__(self, session: Any, thresholds: dict[str, float]):
        self._session = session
        self._input = session.get_inputs()[0].name
        self.thresholds = thresholds

    @classmethod
    def from_artifact(cls, artifact_dir: str | Path, manifest: dict[str, Any], *, sha256_of: Any) -> ChestFilmCheck:
        import onnxruntime as ort

        entry = manifest.get("gate")
        if not entry:
            raise GateError(
                f"Model {manifest.get('name')} has no input gate; add one with "
                "`python -m ml gate --artifact <dir>` before serving it."
            )
        if entry.get("version") != GATE_VERSION:
            raise GateError(f"Model {manifest.get('name')} has gate {entry.get('version')}, this code {GATE_VERSION}.")
        path = Path(artifact_dir) / entry["file"]
        if not path.is_file() or sha256_of(path) != entry["sha256"]:
            raise GateError(f"Gate file {path} is missing or does not match its manifest.")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        return cls(session, {k: float(v) for k, v in entry["thresholds"].items()})

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """(N, side²) thumbnails -> (N, 2): [reconstruction error, Mahalanobis²] per film."""
        (out,) = self._session.run(None, {self._input: np.ascontiguousarray(vectors, dtype=np.float32)})
        return np.asarray(out, dtype=np.float64)

    def check(self, pixels: np.ndarray) -> GateResult:
        residual, mahalanobis = self.scores(thumbnail_vector(pixels)[None])[0]
        measured = {"residual": round(float(residual), 2), "mahalanobis": round(float(mahalanobis), 2)}
        if residual > self.thresholds["residual"] or mahalanobis > self.thresholds["mahalanobis"]:
            return GateResult(
                False,
                "not_chest_film",
                "This does not look like a frontal chest radiograph (it differs from every kind of film "
                "the AI was trained on).",
                measured,
            )
        return GateResult(True, measurements=measured)


def run_gate(decoded: DecodedImage, chest_check: ChestFilmCheck, *, recorded_view: str = "") -> GateResult:
    """All checks in order: header, pixels, learned. The first failure is the verdict."""
    header = check_header(decoded.metadata, is_dicom=decoded.format == "DICOM", recorded_view=recorded_view)
    if header is not None:
        return header
    measured: dict[str, Any] = pixel_measurements(decoded)
    failed = check_pixels(decoded, measured)
    if failed is not None:
        return failed
    learned = chest_check.check(decoded.pixels)
    measured.update(learned.measurements)
    if not learned.passed:
        return GateResult(False, learned.code, learned.reason, measured)
    return GateResult(True, measurements=measured)


# --- intended use ---------------------------------------------------------------------------

# The model card's population: children aged one to five (Kermany et al. 2018), i.e. from the first
# to before the sixth birthday. Outside it a result is shown with a warning, never hidden.
INTENDED_AGE_YEARS = (1, 5)


def dicom_age_years(value: str) -> float | None:
    """DICOM PatientAge ("004Y", "018M", "003W", "010D") in years; None if absent or malformed."""
    value = str(value or "").strip().upper()
    units = {"Y": 1.0, "M": 12.0, "W": 52.1775, "D": 365.25}
    if len(value) == 4 and value[:3].isdigit() and value[3] in units:
        return int(value[:3]) / units[value[3]]
    return None


def intended_use_warning(age_years: float | None) -> str:
    """'' inside the intended population (or when the age is unknown), else the warning text."""
    low, high = INTENDED_AGE_YEARS
    if age_years is None or low <= age_years < high + 1:
        return ""
    age = f"{age_years:.0f} years" if age_years >= 2 else f"{age_years * 12:.0f} months"
    return (
        f"Outside intended use: the patient was {age} old when the film was taken; the AI was made and "
        f"validated for children aged {low} to {high}. Read this result with extra caution."
    )
