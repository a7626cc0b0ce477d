"""The study page answers first: the study's conclusion (most suspicious film, counts, refusals and
why), then a strip of thumbnails linking to each film's card, then the films."""

from __future__ import annotations

import html
import re

import pytest
from django.urls import reverse

from diagnostics.models import Prediction, Study

from .conftest import HTMX, calibrated, jpeg_upload, login_client
from .factories import ModelVersionFactory, PredictionFactory, StudyFactory
from .images import jpeg_bytes

pytestmark = pytest.mark.django_db

CT_REASON = "This is a CT image; the AI reads chest radiographs (CR or DX) only."


def refuse(image, model_version) -> Prediction:
    """What the worker stores for a film the input gate refused."""
    return Prediction.objects.create(
        image=image, model_version=model_version, outcome=Prediction.Outcome.NOT_ANALYSABLE, gate_code="dicom_modality",
        gate_reason=CT_REASON, threshold=model_version.threshold, latency_ms=1.0, model_sha256=model_version.sha256,
        preprocessing_version=model_version.preprocessing_version, input_sha256=image.sha256,
    )  # fmt: skip


def study_of(owner, patient, names: list[str]) -> Study:
    return StudyFactory(created_by=owner, patient=patient,
                        films=[(name, jpeg_bytes(seed=i)) for i, name in enumerate(names)])  # fmt: skip


def summary_of(page: str) -> str:
    return page[page.index('class="card study-summary"') : page.index("</section>", page.index("study-summary"))]


def text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html))


def test_the_conclusion_names_the_most_suspicious_film_and_the_refused_ones(owner, patient):
    model = ModelVersionFactory()  # not calibrated on external films: an "AI score"
    study = study_of(owner, patient, ["left.jpeg", "right.jpeg", "ct-slice.jpeg", "third.jpeg"])
    left, right, ct, third = study.images.all()
    PredictionFactory(image=left, model_version=model, probability=0.3)
    PredictionFactory(image=right, model_version=model, probability=0.87)
    refuse(ct, model)
    PredictionFactory(image=third, model_version=model, probability=0.62, finish_study=True)

    page = login_client(owner).get(reverse("study_detail", args=[study.pk])).content.decode()
    summary = text(summary_of(page))
    assert "Pneumonia suspected on 2 of 3 assessed films" in summary
    assert "Most suspicious film: Image 2 right.jpeg, AI score 87.0 %" in summary
    assert "not a calibrated probability" in summary and "probability of pneumonia" not in summary
    assert "4 films: 3 assessed, 1 not analysable." in summary
    assert "1 of 4 films not analysable" in summary
    assert f"Image 3 ct-slice.jpeg: {CT_REASON}" in summary
    assert 'href="#film-2"' in summary_of(page)
    # The summary comes before the strip, the strip before the films, and every thumbnail links to its card.
    assert page.index("study-summary") < page.index("film-strip") < page.index('id="film-1"')
    for number, image in enumerate(study.images.all(), start=1):
        assert f'id="film-{number}"' in page
        assert re.search(
            rf'href="#film-{number}">\s*<img src="{reverse("image_preview", args=[image.pk])}" alt=""', page
        )
    strip = text(page[page.index("film-strip") : page.index("</nav>", page.index("film-strip"))])
    assert "Image 2 right.jpeg Suspected 87.0 %" in strip and "Image 3 ct-slice.jpeg Not analysable" in strip


def test_a_calibrated_model_is_called_a_probability_in_the_conclusion(owner, patient, active_model):
    calibrated(active_model)
    study = study_of(owner, patient, ["a.jpeg", "b.jpeg"])
    a, b = study.images.all()
    PredictionFactory(image=a, model_version=active_model, probability=0.1)
    PredictionFactory(image=b, model_version=active_model, probability=0.2, finish_study=True)
    summary = text(summary_of(login_client(owner).get(reverse("study_detail", args=[study.pk])).content.decode()))
    assert "No pneumonia suspected on any of the 2 assessed films" in summary
    assert "Most suspicious film: Image 2 b.jpeg, probability of pneumonia 20.0 %" in summary
    assert "AI score" not in summary


def test_a_study_of_only_refused_films_has_no_result(owner, patient):
    model = ModelVersionFactory()
    study = study_of(owner, patient, ["ct.jpeg"])
    refuse(study.images.get(), model)
    Study.objects.filter(pk=study.pk).update(status=Study.Status.DONE)
    page = login_client(owner).get(reverse("study_detail", args=[study.pk])).content.decode()
    summary = text(summary_of(page))
    assert "the AI could read none of this study's films" in summary
    assert "1 film: 0 assessed, 1 not analysable." in summary and CT_REASON in summary
    assert "film-strip" not in page  # one film: nothing to choose between


def test_a_done_study_without_a_scored_film_never_says_the_assessment_is_ready(owner, patient):
    """Issue 29 item 5: the status says no AI result could be given, and why; no reassuring tick."""
    model = ModelVersionFactory()
    study = study_of(owner, patient, ["ct.jpeg", "ct2.jpeg"])
    for image in study.images.all():
        refuse(image, model)
    Study.objects.filter(pk=study.pk).update(status=Study.Status.DONE)
    client = login_client(owner)
    page = client.get(reverse("study_detail", args=[study.pk])).content.decode()
    status = html.unescape(
        text(page[page.index('id="study-status"') : page.index("</div>", page.index('id="study-status"'))])
    )
    assert "assessment is ready" not in page
    assert (
        "Done, no AI result — no AI result could be given. The AI could read none of the study's 2 films. "
        f"Images 1 and 2: {CT_REASON}" in status
    )
    assert "status-done-no-result" in page and 'class="status status-done"' not in page
    worklist = client.get(reverse("worklist")).content.decode()
    assert "Done, no AI result" in worklist and "Not analysable" in worklist


@pytest.mark.parametrize(
    ("status", "line", "conclusion"),
    [
        ("queued", "waiting for the AI; this page updates by itself", "the study is queued"),
        ("running", "the AI is assessing the images", "the AI is assessing the 2 films"),
        ("failed", "the AI could not assess this study", "the AI assessment failed (the reason is given above)"),
        # Done without a scored film: never "the AI assessment is ready" (issue 29 item 5).
        (
            "done",
            "no AI result could be given. No film of this study has an AI assessment.",
            "No AI result is shown for this study",
        ),
    ],
)
def test_every_status_has_its_own_words(owner, patient, status, line, conclusion):
    study = study_of(owner, patient, ["a.jpeg", "b.jpeg"])
    Study.objects.filter(pk=study.pk).update(status=status, failure_reason="No active AI model is registered")
    page = text(login_client(owner).get(reverse("study_detail", args=[study.pk])).content.decode())
    assert line in page and conclusion in page
    assert "queued for AI assessment" not in page
    assert ("No active AI model is registered" in page) == (status == "failed")


def test_the_live_region_brings_the_conclusion_when_the_study_is_done(owner, patient):
    study = study_of(owner, patient, ["a.jpeg", "b.jpeg"])
    a, b = study.images.all()
    model = ModelVersionFactory()
    PredictionFactory(image=a, model_version=model, probability=0.9)
    PredictionFactory(image=b, model_version=model, probability=0.4, finish_study=True)
    live = login_client(owner).get(reverse("study_live", args=[study.pk]), {"seen": "running"}, **HTMX)
    assert live.status_code == 200
    assert "Most suspicious film: Image 1 a.jpeg" in text(live.content.decode())


def test_the_upload_message_names_what_was_uploaded_not_a_status_it_may_have_left(owner, patient):
    client = login_client(owner)
    response = client.post(
        reverse("study_new", args=[patient.pk]),
        {"modality": "CR", "images": [jpeg_upload("a.jpeg"), jpeg_upload("b.jpeg", seed=1)]},
        follow=True,
    )
    page = response.content.decode()
    assert "Study uploaded: 2 films." in page and "queued for AI assessment" not in page


# --- the worklist's film count and age columns ---


@pytest.mark.parametrize(
    ("born", "on", "age"),
    [
        ("2024-03-15", "2024-03-15", "0 mo"),
        ("2024-03-15", "2024-10-14", "6 mo"),
        ("2024-03-15", "2024-10-15", "7 mo"),
        ("2023-03-15", "2025-03-14", "23 mo"),
        ("2022-01-31", "2025-03-01", "3 y 1 mo"),
        ("2020-02-29", "2025-02-28", "4 y 11 mo"),
        ("2025-01-01", "2024-12-31", "—"),  # a birth date after the film: say nothing rather than a wrong age
    ],
)
def test_age_at_writes_months_under_two_years_then_years_and_months(born, on, age):
    import datetime

    from diagnostics.templatetags.portal_format import age_at

    assert age_at(datetime.date.fromisoformat(born), datetime.date.fromisoformat(on)) == age


def test_the_worklist_shows_each_study_s_films_and_the_patient_s_age_at_upload(owner, patient):
    import datetime

    patient.birth_date = datetime.date.today() - datetime.timedelta(days=3 * 365 + 70)
    patient.save()
    study_of(owner, patient, ["a.jpeg", "b.jpeg", "c.jpeg"])
    study_of(owner, patient, ["d.jpeg"])
    page = login_client(owner).get(reverse("worklist")).content.decode()
    assert (
        '<th role="columnheader" scope="col">Age at upload</th>' in page
        and '<th role="columnheader" scope="col">Films</th>' in page
    )
    assert re.findall(r'<td role="cell" class="film-count" data-label="Films">(\d+)</td>', page) == [
        "1",
        "3",
    ]  # newest first
    assert re.findall(r'<td role="cell" class="age" data-label="Age">([^<]+)</td>', page) == ["3 y 2 mo"] * 2
