"""Pictures of films for people (browser display, DICOM window/level, heatmap overlay) and the study report.

The PDF report is rendered from an HTML template with xhtml2pdf (pure Python, no system
libraries); every export is written to the audit log.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models.fields.files import FieldFile
from django.template.loader import render_to_string
from django.utils import timezone
from PIL import Image as PILImage

from diagnostics.models import Acknowledgement, Feedback, Image, Prediction, Study, User
from diagnostics.selectors import (
    FilmResult,
    study_acknowledgement_of_the_study,
    study_film_results,
    study_summary,
    study_taken_on,
)
from diagnostics.selectors.heatmaps import HeatmapState
from diagnostics.selectors.warnings import study_warnings
from ml.serving.decode import apply_display_window

from .audit import audit_record
from .images import DERIVATIVE_SIDE, image_ensure_derivatives

PREVIEW_SIZE = DERIVATIVE_SIDE
REPORT_IMAGE_SIZE = 480
REPORT_OVERLAY_OPACITY = 0.55


@dataclass(frozen=True)
class Window:
    """A DICOM display window as percentages of the film's stored value range."""

    centre: float  # 0..100
    width: float  # 1..100

    @classmethod
    def from_query(cls, centre: str | None, width: str | None) -> Window | None:
        if centre in (None, "") and width in (None, ""):
            return None
        try:
            window = cls(float(centre or 50), float(width or 100))
        except ValueError:
            raise ValidationError("The window centre and width must be numbers.") from None
        if not (0 <= window.centre <= 100 and 1 <= window.width <= 100):
            raise ValidationError("The window centre must be 0–100 % and the width 1–100 %.")
        return window


def image_display_pixels(*, image: Image, max_side: int = PREVIEW_SIZE, window: Window | None = None) -> np.ndarray:
    """(H, W) uint8 of a stored film for display: the file's own window, or `window` for grayscale DICOM.
    Read from the derivatives made when the film was stored: the original is never decoded again."""
    image = image_ensure_derivatives(image=image)
    if window is not None and image.window_source:
        source = np.asarray(_read_picture(image.window_source), dtype=np.uint16)
        picture = PILImage.fromarray(apply_display_window(source, centre=window.centre, width=window.width))
    else:
        picture = _read_picture(image.preview)
    picture.thumbnail((max_side, max_side))
    return np.asarray(picture)


def _read_picture(field_file: FieldFile) -> PILImage.Image:
    with field_file.open("rb") as handle:
        picture = PILImage.open(io.BytesIO(handle.read()))
        picture.load()
    return picture


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def overlay_pixels(*, film: np.ndarray, heatmap_png: bytes, opacity: float = REPORT_OVERLAY_OPACITY) -> np.ndarray:
    """The film with its heatmap blended on top, as the result page shows it: (H, W, 3) uint8."""
    base = PILImage.fromarray(film).convert("RGBA")
    heat = PILImage.open(io.BytesIO(heatmap_png)).convert("RGBA").resize(base.size, PILImage.Resampling.BILINEAR)
    alpha = np.asarray(heat.getchannel("A"), dtype=np.float32) * opacity
    heat.putalpha(PILImage.fromarray(np.clip(alpha, 0, 255).astype(np.uint8)))
    return np.asarray(PILImage.alpha_composite(base, heat).convert("RGB"))


@dataclass(frozen=True)
class ReportImage:
    number: int
    image: Image
    prediction: Prediction | None
    film_uri: str
    overlay_uri: str
    heatmap: HeatmapState | None
    readings: list[Feedback]  # the clinicians' readings of the film, newest (the current one) first
    acknowledgements: list[Acknowledgement]  # "seen: no AI result" on a film the AI could not assess


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _report_images(films: list[FilmResult]) -> list[ReportImage]:
    """Every film's assessment, and the pictures (film, heatmap overlay) of the first
    REPORT_MAX_FILM_PICTURES films: drawing and embedding the pictures is what takes a web worker's time
    (about 0.4 s a film), so a study of many films does not hold a worker for long (docs/operations.md)."""
    images = []
    for index, result in enumerate(films):
        film_uri = overlay_uri = ""
        if index < settings.REPORT_MAX_FILM_PICTURES:
            film = image_display_pixels(image=result.image, max_side=REPORT_IMAGE_SIZE)
            if result.prediction is not None and result.heatmap is not None and result.heatmap.ready:
                with result.prediction.heatmap.open("rb") as handle:
                    overlay_uri = _data_uri(png_bytes(overlay_pixels(film=film, heatmap_png=handle.read())))
            film_uri = _data_uri(png_bytes(film))
        prediction = result.prediction
        readings = list(prediction.feedback.all()) if prediction is not None else []  # prefetched
        acknowledgements = list(prediction.acknowledgements.all()) if prediction is not None else []
        images.append(
            ReportImage(
                result.number, result.image, prediction, film_uri, overlay_uri, result.heatmap, readings,
                acknowledgements,
            )
        )  # fmt: skip
    return images


def study_report_context(*, study: Study, user: User) -> dict[str, object]:
    """What the report shows: the study page's conclusion (selectors.study_summary, same words), the
    patient's age on the day of the study, then each film with its assessment and readings. Times are
    in the portal's time zone (settings.TIME_ZONE), which the report names."""
    films = study_film_results(study=study)
    return {
        "study": study,
        "patient": study.patient,
        "summary": study_summary(status=study.status, results=films),
        # A study the AI left without any scored film, seen by a clinician ("seen: no AI result").
        "study_acknowledgement": study_acknowledgement_of_the_study(study=study),
        "warnings": study_warnings(study=study),
        "taken_on": study_taken_on(study=study),
        "images": _report_images(films),
        "generated_at": timezone.now(),
        "generated_by": user,
        "time_zone": timezone.get_current_timezone_name(),
        "INTENDED_USE": settings.INTENDED_USE,
        "max_film_pictures": settings.REPORT_MAX_FILM_PICTURES,
    }


def study_report_pdf(*, user: User, study: Study) -> bytes:
    """The study's report as a PDF, rendered from templates/diagnostics/report.html, and audited.

    `study` must come from study_get_for_user (its images carry only the predictions shown to clinicians).
    """
    from xhtml2pdf import pisa

    html = render_to_string("diagnostics/report.html", study_report_context(study=study, user=user))
    buffer = io.BytesIO()
    result = pisa.CreatePDF(html, dest=buffer, encoding="utf-8")
    if result.err:
        raise RuntimeError(f"The PDF report could not be rendered ({result.err} errors).")
    pdf = buffer.getvalue()
    audit_record(
        action="study.report_exported",
        actor=user,
        target=study,
        team_id=study.patient.team_id,
        detail={"format": "pdf", "bytes": len(pdf)},
    )
    return pdf
