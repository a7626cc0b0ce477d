"""A film is decoded once when it is stored: previews, window/level and the PDF read its derivatives."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from django.urls import reverse
from PIL import Image as PILImage

from diagnostics.models import Image
from diagnostics.services.images import DERIVATIVE_SIDE

from .conftest import login_client
from .factories import StudyFactory

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).parent / "fixtures"
DICOM_FILM = FIXTURES / "dicom" / "RG1_J2KI.dcm"  # 1841x1955 JPEG 2000, the worst decode of the fixtures
JPEG_FILM = FIXTURES / "films" / "IM-0119-0001.jpeg"


def _ruin_original(image: Image) -> None:
    """Overwrite the stored original with bytes no decoder reads: only the derivatives can answer now."""
    Path(image.file.path).write_bytes(b"not a film any more")


def _png(response) -> np.ndarray:
    assert response.status_code == 200 and response["Content-Type"] == "image/png", response.content[:200]
    return np.asarray(PILImage.open(io.BytesIO(response.content)))


def test_storing_a_film_makes_bounded_derivatives(owner, patient):
    study = StudyFactory(
        created_by=owner,
        patient=patient,
        films=[("film.dcm", DICOM_FILM.read_bytes()), ("film.jpeg", JPEG_FILM.read_bytes())],
    )
    dicom, jpeg = study.images.order_by("pk")
    for image in (dicom, jpeg):
        preview = PILImage.open(image.preview.path)
        assert preview.format == "JPEG" and preview.mode == "L" and max(preview.size) <= DERIVATIVE_SIDE
        # the same aspect as the film
        assert abs(preview.size[0] / preview.size[1] - image.width / image.height) < 0.01
    window_source = PILImage.open(dicom.window_source.path)
    assert window_source.mode.startswith("I;16") and max(window_source.size) <= DERIVATIVE_SIDE
    assert np.asarray(window_source).max() == 65535  # the film's full range, stretched
    assert not jpeg.window_source  # only grayscale DICOM has a window/level source


@pytest.mark.slow
def test_previews_window_level_and_the_report_never_decode_the_original_again(owner, patient, active_model):
    study = StudyFactory(created_by=owner, patient=patient, films=[("film.dcm", DICOM_FILM.read_bytes())])
    image = study.images.get()
    client = login_client(owner)
    url = reverse("image_preview", args=[image.pk])
    before = _png(client.get(url))
    _ruin_original(image)
    assert np.array_equal(_png(client.get(url)), before)
    full, narrow = _png(client.get(url, {"wc": "50", "ww": "100"})), _png(client.get(url, {"wc": "80", "ww": "10"}))
    assert full.std() > 0 and not np.array_equal(full, narrow)
    report = client.get(reverse("study_report", args=[study.pk]))
    assert report.status_code == 200 and report["Content-Type"] == "application/pdf"


def test_a_film_stored_before_derivatives_existed_gets_them_on_first_view_once(owner, patient, media_root):
    study = StudyFactory(created_by=owner, patient=patient, films=[("film.dcm", DICOM_FILM.read_bytes())])
    image = study.images.get()
    for name in (image.preview.name, image.window_source.name):
        image.preview.storage.delete(name)
    Image.objects.filter(pk=image.pk).update(preview="", window_source="")
    client = login_client(owner)
    url = reverse("image_preview", args=[image.pk])

    first = _png(client.get(url, {"wc": "40", "ww": "30"}))
    image.refresh_from_db()
    assert image.preview and image.window_source
    _ruin_original(image)
    assert np.array_equal(_png(client.get(url, {"wc": "40", "ww": "30"})), first)
    files = sorted(p.relative_to(media_root).as_posix() for p in Path(media_root, "derivatives").iterdir())
    assert files == sorted([image.preview.name, image.window_source.name])  # made once, nothing left over
