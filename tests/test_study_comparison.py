"""The patient's previous study beside the current one: which study is "previous" (DICOM study date, else
upload day), who may see it (owner, team member; never an outsider), the panel the viewer shows and the
audit event its read leaves."""

from __future__ import annotations

import datetime
import re

import pytest
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from diagnostics.models import AuditEvent, Image, Study
from diagnostics.selectors.comparison import study_comparison_for_user, study_previous_for_user

from .conftest import HTMX, login_client
from .factories import ModelVersionFactory, PatientFactory, PredictionFactory, StudyFactory
from .images import dicom_bytes, jpeg_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_cache():
    cache.clear()  # audit_read records a repeated read once per window, kept in the cache


def uploaded_on(study: Study, day: str) -> Study:
    Study.objects.filter(pk=study.pk).update(created_at=datetime.datetime.fromisoformat(f"{day}T10:00:00+00:00"))
    study.refresh_from_db()
    return study


def dated(study: Study, study_date: str) -> Study:
    for image in study.images.all():
        Image.objects.filter(pk=image.pk).update(dicom_metadata=image.dicom_metadata | {"StudyDate": study_date})
    return study


@pytest.fixture
def history(owner, patient):
    """Three studies of the patient: a DICOM study taken 1 Dec 2023 but uploaded last month, a JPEG
    study uploaded 10 Jan 2024 (no study date: its upload day counts), and today's study."""
    late_upload = dated(
        uploaded_on(StudyFactory(patient=patient, films=[("old.dcm", dicom_bytes())]), "2024-02-20"), "20231201"
    )
    january = uploaded_on(StudyFactory(patient=patient, seed=1), "2024-01-10")
    today = StudyFactory(patient=patient, seed=2)
    return {"late_upload": late_upload, "january": january, "today": today}


def test_previous_is_by_study_date_else_upload_day(owner, history):
    previous = study_previous_for_user(user=owner, study=history["today"])
    assert previous is not None and previous.study.pk == history["january"].pk
    assert previous.acquired.date == datetime.date(2024, 1, 10) and not previous.acquired.from_dicom
    # Uploaded after January's, but taken before it: the DICOM study date counts.
    before_january = study_previous_for_user(user=owner, study=history["january"])
    assert before_january is not None and before_january.study.pk == history["late_upload"].pk
    assert before_january.acquired.date == datetime.date(2023, 12, 1) and before_january.acquired.from_dicom
    assert study_previous_for_user(user=owner, study=history["late_upload"]) is None


def test_the_same_day_goes_by_upload_time_and_other_patients_never_count(owner, patient, team):
    morning = StudyFactory(patient=patient, seed=1)
    Study.objects.filter(pk=morning.pk).update(created_at=timezone.now() - datetime.timedelta(minutes=5))
    afternoon = StudyFactory(patient=patient, seed=2)
    someone_else = PatientFactory(team=team, created_by=owner, name="Blaise Pascal", medical_record_number="MRN-B")
    uploaded_on(StudyFactory(patient=someone_else, seed=3), "2023-06-01")
    previous = study_previous_for_user(user=owner, study=afternoon)
    assert previous is not None and previous.study.pk == morning.pk
    assert study_previous_for_user(user=owner, study=morning) is None


def test_the_owner_and_a_team_member_see_the_previous_study_and_an_outsider_does_not(owner, member, outsider, history):
    for user in (owner, member):
        comparison = study_comparison_for_user(user=user, study=history["today"])
        assert comparison is not None and comparison.study.pk == history["january"].pk
        page = login_client(user).get(reverse("study_compare", args=[history["today"].pk]), **HTMX)
        assert page.status_code == 200 and f"Previous study #{history['january'].pk}" in page.content.decode()
    assert study_previous_for_user(user=outsider, study=history["today"]) is None
    assert study_comparison_for_user(user=outsider, study=history["today"]) is None
    client = login_client(outsider)
    assert client.get(reverse("study_compare", args=[history["today"].pk]), **HTMX).status_code == 404
    assert client.get(reverse("study_detail", args=[history["today"].pk]), {"compare": "previous"}).status_code == 404
    assert not AuditEvent.objects.filter(actor=outsider, action="study.viewed").exists()


def test_the_panel_shows_the_previous_study_s_most_suspicious_film_its_date_and_result(owner, patient):
    model = ModelVersionFactory()
    before = uploaded_on(
        StudyFactory(patient=patient, films=[("left.jpeg", jpeg_bytes(seed=1)), ("right.jpeg", jpeg_bytes(seed=2))]),
        "2024-01-10",
    )
    left, right = before.images.all()
    PredictionFactory(image=left, model_version=model, probability=0.2)
    PredictionFactory(image=right, model_version=model, probability=0.8, finish_study=True)
    current = StudyFactory(patient=patient, seed=3)

    panel = login_client(owner).get(reverse("study_compare", args=[current.pk]), {"n": "1"}, **HTMX).content.decode()
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", panel))
    assert f"Previous study #{before.pk}, 2024-01-10 (upload date: the films carry no study date)" in text
    assert "Image 2 of 2 right.jpeg: Pneumonia suspected, AI score 80.0 % (threshold 50.0 %)" in text
    assert "the study's most suspicious film" in text and "No clinician's reading of this film." in text
    assert f'src="/images/{right.pk}/preview.png"' in panel and f'src="/images/{left.pk}/preview.png"' not in panel
    assert "data-viewer-stage" in panel and "data-zoom" in panel and "data-fullscreen" in panel
    assert f'href="/studies/{before.pk}/"' in panel
    [event] = AuditEvent.objects.filter(actor=owner, action="study.viewed", object_id=str(before.pk))
    assert event.detail == {"via": "compare", "beside": current.pk} and event.team_id == owner.team_id


def test_a_previous_study_without_a_result_shows_its_first_film_and_says_so(owner, patient):
    before = uploaded_on(StudyFactory(patient=patient, films=[("first.dcm", dicom_bytes())]), "2024-03-01")
    current = StudyFactory(patient=patient, seed=3)
    panel = login_client(owner).get(reverse("study_compare", args=[current.pk]), **HTMX).content.decode()
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", panel))
    assert f"Previous study #{before.pk}, 2024-01-02 (study date from the DICOM header)" in text
    assert "Image 1 of 1 first.dcm: no AI result yet (queued)." in text
    assert "data-window-centre" in panel and 'value="window" data-drag-mode' in panel  # a DICOM film: W/L tools


def test_the_study_page_offers_the_comparison_only_when_there_is_an_earlier_study(owner, patient):
    first = uploaded_on(StudyFactory(patient=patient, seed=1), "2024-01-10")
    second = StudyFactory(patient=patient, seed=2)
    client = login_client(owner)
    page = client.get(reverse("study_detail", args=[second.pk])).content.decode()
    assert "Compare with previous study (2024-01-10)" in page
    assert f'hx-get="/studies/{second.pk}/compare/?n=1"' in page and 'id="compare-slot"' in page
    assert "Previous study #" not in page  # loaded only when asked for: no read of it yet
    assert not AuditEvent.objects.filter(action="study.viewed", object_id=str(first.pk)).exists()
    assert "Compare with previous study" not in client.get(reverse("study_detail", args=[first.pk])).content.decode()

    # Without JavaScript the control is a link: the whole page, with the previous study beside the film.
    with_panel = client.get(reverse("study_detail", args=[second.pk]), {"compare": "previous"}).content.decode()
    assert f"Previous study #{first.pk}, 2024-01-10" in with_panel
    assert AuditEvent.objects.filter(action="study.viewed", object_id=str(first.pk), detail__via="compare").exists()


def test_the_comparison_sits_beside_the_most_suspicious_film(owner, patient):
    uploaded_on(StudyFactory(patient=patient, seed=1), "2024-01-10")
    model = ModelVersionFactory()
    current = StudyFactory(patient=patient, films=[("a.jpeg", jpeg_bytes(seed=2)), ("b.jpeg", jpeg_bytes(seed=3))])
    a, b = current.images.all()
    PredictionFactory(image=a, model_version=model, probability=0.1)
    PredictionFactory(image=b, model_version=model, probability=0.9, finish_study=True)
    page = login_client(owner).get(reverse("study_detail", args=[current.pk])).content.decode()
    film_2 = page[page.index('id="film-2"') :]
    assert "Compare with previous study" in film_2 and 'id="compare-slot"' in film_2
    assert "Compare with previous study" not in page[page.index('id="film-1"') : page.index('id="film-2"')]
