"""Clinician pages: worklist order and filters, live status, upload and DICOM inspection, feedback, report."""

from __future__ import annotations

import datetime
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from diagnostics.formatting.numbers import score_percent
from diagnostics.models import AuditEvent, Feedback, Prediction, Study

from .conftest import HTMX, calibrated, login_client
from .factories import ModelVersionFactory, PatientFactory, PredictionFactory, StudyFactory
from .images import dicom_bytes, jpeg_bytes

pytestmark = pytest.mark.django_db


def study_ids_in(html: str, studies: list[Study]) -> list[int]:
    """The order in which the studies' links appear on a page."""
    positions = {study.pk: html.find(f'href="/studies/{study.pk}/') for study in studies}
    return [pk for pk, position in sorted(positions.items(), key=lambda item: item[1]) if position >= 0]


@pytest.fixture
def four_studies(owner, patient, team, active_model):
    other_patient = PatientFactory(team=team, created_by=owner, name="Blaise Pascal", medical_record_number="MRN-B")
    low = StudyFactory(created_by=owner, patient=patient, accession_number="LOW")
    high = StudyFactory(created_by=owner, patient=other_patient, accession_number="HIGH")
    waiting = StudyFactory(created_by=owner, patient=patient, accession_number="WAIT")
    middle = StudyFactory(created_by=owner, patient=other_patient, accession_number="MID")
    PredictionFactory(study=low, model_version=active_model, probability=0.10, finish_study=True)
    PredictionFactory(study=high, model_version=active_model, probability=0.95, finish_study=True)
    PredictionFactory(study=middle, model_version=active_model, probability=0.70, finish_study=True)
    return {"low": low, "high": high, "waiting": waiting, "middle": middle}


def test_worklist_triage_puts_the_most_suspicious_first_and_waiting_studies_last(owner, four_studies):
    s = four_studies
    html = login_client(owner).get(reverse("worklist")).content.decode()
    assert study_ids_in(html, list(s.values())) == [s["high"].pk, s["middle"].pk, s["low"].pk, s["waiting"].pk]
    assert "Pneumonia suspected" in html and "No pneumonia suspected" in html and "Awaiting AI" in html
    # Status is text next to an icon, not a colour alone.
    assert "Done</span>" in html and "Queued</span>" in html


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"sort": "newest"}, ["middle", "waiting", "high", "low"]),
        ({"sort": "oldest"}, ["low", "high", "waiting", "middle"]),
        ({"sort": "probability"}, ["low", "middle", "high", "waiting"]),
        ({"sort": "patient"}, ["waiting", "low", "middle", "high"]),
        ({"sort": "patient_desc"}, ["middle", "high", "waiting", "low"]),
        ({"sort": "status"}, ["middle", "high", "low", "waiting"]),
        ({"sort": "status_desc"}, ["waiting", "middle", "high", "low"]),
        ({"suspicion": "suspected"}, ["high", "middle"]),
        ({"suspicion": "not_suspected"}, ["low"]),
        ({"suspicion": "awaiting"}, ["waiting"]),
        ({"min_probability": "50"}, ["high", "middle"]),
        ({"status": "queued"}, ["waiting"]),
        ({"q": "pascal"}, ["high", "middle"]),
        ({"q": "MRN-A"}, ["low", "waiting"]),
        ({"sort": "nonsense", "min_probability": "abc"}, ["high", "middle", "low", "waiting"]),
    ],
)
def test_worklist_sorts_and_filters(owner, four_studies, query, expected):
    html = login_client(owner).get(reverse("worklist"), query).content.decode()
    assert study_ids_in(html, list(four_studies.values())) == [four_studies[name].pk for name in expected]


def test_worklist_filters_by_upload_date(owner, four_studies):
    old = four_studies["low"]
    Study.objects.filter(pk=old.pk).update(created_at=timezone.now() - datetime.timedelta(days=30))
    yesterday = (timezone.localdate() - datetime.timedelta(days=1)).isoformat()
    client = login_client(owner)
    recent = client.get(reverse("worklist"), {"date_from": yesterday}).content.decode()
    assert old.pk not in study_ids_in(recent, list(four_studies.values()))
    assert len(study_ids_in(recent, list(four_studies.values()))) == 3
    earlier = client.get(reverse("worklist"), {"date_to": yesterday}).content.decode()
    assert study_ids_in(earlier, list(four_studies.values())) == [old.pk]


def test_worklist_column_headers_sort_and_say_how(owner, four_studies):
    html = login_client(owner).get(reverse("worklist"), {"status": "done"}).content.decode()
    # Default triage order: the AI column is sorted descending, and its link reverses it, keeping the filter.
    assert 'aria-sort="descending"><a href="?status=done&amp;sort=probability">AI suspicion' in html
    assert 'aria-sort="none"><a href="?status=done&amp;sort=newest">Uploaded' in html


@pytest.mark.parametrize(
    ("column", "first", "second", "first_aria"),
    [
        ("Uploaded", "newest", "oldest", "descending"),
        ("Patient", "patient", "patient_desc", "ascending"),
        ("Status", "status", "status_desc", "ascending"),
        ("AI suspicion", "triage", "probability", "descending"),
    ],
)
def test_a_second_click_on_a_column_heading_reverses_the_order(owner, four_studies, column, first, second, first_aria):
    """Each heading sorts by its column; on the column already sorted it links to the reverse order."""
    client = login_client(owner)
    reverse_aria = {"ascending": "descending", "descending": "ascending"}[first_aria]
    by_first = client.get(reverse("worklist"), {"sort": first}).content.decode()
    assert f'aria-sort="{first_aria}"><a href="?sort={second}">{column}</a>' in by_first
    by_second = client.get(reverse("worklist"), {"sort": second}).content.decode()
    assert f'aria-sort="{reverse_aria}"><a href="?sort={first}">{column}</a>' in by_second
    if column == "Uploaded":  # the other orders break ties newest first both ways (test_worklist_sorts_and_filters)
        studies = list(four_studies.values())
        assert study_ids_in(by_second, studies) == study_ids_in(by_first, studies)[::-1]
    other = "status" if column != "Status" else "patient"
    unsorted = client.get(reverse("worklist"), {"sort": other}).content.decode()
    assert f'aria-sort="none"><a href="?sort={first}">{column}</a>' in unsorted


def test_htmx_worklist_request_gets_the_table_alone_and_polls_only_while_work_is_pending(owner, four_studies):
    client = login_client(owner)
    fragment = client.get(reverse("worklist"), **HTMX).content.decode()
    assert fragment.lstrip().startswith('<div id="worklist-table"') and "<html" not in fragment
    assert 'hx-trigger="every 5s"' in fragment  # the waiting study
    settled = client.get(reverse("worklist"), {"status": "done"}, **HTMX).content.decode()
    assert "hx-trigger" not in settled


def test_study_links_carry_the_worklist_order_to_previous_and_next(owner, four_studies):
    s = four_studies
    client = login_client(owner)
    page = client.get(reverse("study_detail", args=[s["middle"].pk])).content.decode()
    # Triage order: high, middle, low, waiting.
    assert f'href="/studies/{s["high"].pk}/" rel="prev" data-key="k"' in page
    assert f'href="/studies/{s["low"].pk}/" rel="next" data-key="j"' in page
    assert "Study 2 of 4 in your worklist" in page
    filtered = client.get(reverse("study_detail", args=[s["middle"].pk]), {"sort": "newest"}).content.decode()
    assert f'href="/studies/{s["waiting"].pk}/?sort=newest" rel="next"' in filtered


def test_live_status_answers_204_until_the_status_changes_then_the_new_results(owner, patient, active_model):
    calibrated(active_model)  # its score reads as a probability
    study = StudyFactory(created_by=owner, patient=patient)
    client = login_client(owner)
    page = client.get(reverse("study_detail", args=[study.pk])).content.decode()
    assert f'hx-get="/studies/{study.pk}/live/?seen=queued" hx-trigger="every 2s"' in page
    assert 'id="study-status" class="study-status" role="status"' in page
    live = reverse("study_live", args=[study.pk])
    assert client.get(live, {"seen": "queued"}, **HTMX).status_code == 204

    Study.objects.filter(pk=study.pk).update(status=Study.Status.RUNNING)
    running = client.get(live, {"seen": "queued"}, **HTMX).content.decode()
    assert "?seen=running" in running and 'hx-swap-oob="innerHTML"' in running and "Running" in running

    prediction = PredictionFactory(study=study, model_version=active_model, probability=0.91, finish_study=True)
    done = client.get(live, {"seen": "running"}, **HTMX).content.decode()
    assert 'hx-trigger="every 2s" hx-swap="outerHTML">' not in done.split('id="study-results"')[1].split(">")[0]
    assert (
        "Pneumonia suspected" in done
        and score_percent(prediction.probability, prediction.threshold) in done
        and active_model.name in done
    )
    # The finding comes first in words, then the numbers.
    assert done.index("Pneumonia suspected") < done.index("Probability of pneumonia") < done.index("Model version")
    # The heatmap is stored with the prediction (this factory-made one has none): nothing to poll for.
    assert "No heatmap was stored with this assessment." in done and "/heatmap/?n=" not in done


def test_failed_study_shows_its_reason_live(owner, patient):
    study = StudyFactory(created_by=owner, patient=patient)
    Study.objects.filter(pk=study.pk).update(
        status=Study.Status.FAILED, failure_reason="No active AI model is registered."
    )
    html = login_client(owner).get(reverse("study_live", args=[study.pk]), {"seen": "queued"}, **HTMX).content.decode()
    assert "Failed" in html and "No active AI model is registered." in html and "hx-trigger" not in html


def test_shadow_predictions_never_reach_the_result_page(owner, patient, active_model, tmp_path):
    study = StudyFactory(created_by=owner, patient=patient)
    PredictionFactory(study=study, model_version=active_model, probability=0.2, finish_study=True)
    shadow_model = ModelVersionFactory(name="shadow@1", artifact_path=str(tmp_path), status="shadow")
    shadow = PredictionFactory(
        study=study, model_version=shadow_model, probability=0.99, role=Prediction.Role.SHADOW, finish_study=True
    )
    client = login_client(owner)
    html = client.get(reverse("study_detail", args=[study.pk])).content.decode()
    assert "shadow@1" not in html and "0.990" not in html
    assert client.get(reverse("heatmap_image", args=[shadow.pk])).status_code == 404
    assert client.post(reverse("feedback_submit", args=[shadow.pk]), {"confirmed_label": "NORMAL"}).status_code == 404


def test_outsider_reaches_none_of_the_new_endpoints(outsider, owner, patient, active_model):
    study = StudyFactory(created_by=owner, patient=patient)
    prediction = PredictionFactory(study=study, model_version=active_model, probability=0.8, finish_study=True)
    client = login_client(outsider)
    for url in (
        reverse("study_live", args=[study.pk]),
        reverse("study_report", args=[study.pk]),
        reverse("heatmap_image", args=[prediction.pk]),
    ):
        assert client.get(url).status_code == 404, url
    assert (
        client.post(reverse("feedback_submit", args=[prediction.pk]), {"confirmed_label": "NORMAL"}).status_code == 404
    )
    inspect = reverse("study_inspect_dicom", args=[patient.pk])
    assert client.post(inspect, {"images": [_dicom_upload()]}).status_code == 404
    assert not Feedback.objects.exists()
    assert not AuditEvent.objects.filter(action="study.report_exported").exists()


def test_htmx_upload_redirects_to_the_study_and_a_refusal_comes_back_in_the_form(owner, patient):
    client = login_client(owner)
    url = reverse("study_new", args=[patient.pk])
    good = [SimpleUploadedFile("a.jpeg", jpeg_bytes(seed=1)), SimpleUploadedFile("b.jpeg", jpeg_bytes(seed=2))]
    response = client.post(url, {"modality": "CR", "images": good}, **HTMX)
    study = Study.objects.get()
    assert response.status_code == 204 and response["HX-Redirect"] == reverse("study_detail", args=[study.pk])
    assert study.images.count() == 2

    bad = SimpleUploadedFile("notes.jpeg", b"%PDF-1.7 not an image")
    refused = client.post(url, {"modality": "CR", "images": [SimpleUploadedFile("c.jpeg", jpeg_bytes()), bad]}, **HTMX)
    html = refused.content.decode()
    assert refused.status_code == 400 and html.lstrip().startswith("<form")
    assert (
        'role="alert" id="upload-errors"' in html and "notes.jpeg: This file is not a JPEG, PNG or DICOM image" in html
    )
    assert Study.objects.count() == 1


def _dicom_upload(patient_id: str = "MRN-A-1", view: str = "AP") -> SimpleUploadedFile:
    import numpy as np

    pixels = (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)
    data = dicom_bytes(pixels, window=(2048, 4096))
    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(data))
    dataset.PatientID, dataset.ViewPosition, dataset.Modality = patient_id, view, "DX"
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return SimpleUploadedFile("film.dcm", buffer.getvalue(), content_type="application/dicom")


def test_dicom_inspection_shows_the_metadata_and_offers_view_and_modality(owner, patient):
    client = login_client(owner)
    url = reverse("study_inspect_dicom", args=[patient.pk])
    html = client.post(url, {"images": [_dicom_upload()]}, **HTMX).content.decode()
    assert "film.dcm" in html and "MRN-A-1" in html and "2 Jan 2024" in html
    assert 'data-view-position="AP" data-modality="DX"' in html
    assert "differs from this patient" not in html

    mismatch = client.post(url, {"images": [_dicom_upload(patient_id="SOMEONE-ELSE")]}, **HTMX).content.decode()
    assert "SOMEONE-ELSE" in mismatch and "differs from this patient's record number MRN-A-1" in mismatch
    assert not Study.objects.exists()  # inspecting stores nothing


def test_dicom_inspection_names_every_header_field_that_disagrees_with_the_record(owner, patient, settings):
    """The same rule as the study's wrong-patient warning (selectors.warnings): ID, name, birth date, sex."""
    from pydicom.uid import generate_uid

    from .images import cr_film_bytes

    film = cr_film_bytes(patient_id="9RG1", study_uid=generate_uid(), patient_name="CompressedSamples^RG1",
                         birth_date="19400305", study_date="20040826", sex="M")  # fmt: skip
    url = reverse("study_inspect_dicom", args=[patient.pk])
    client = login_client(owner)
    html = client.post(url, {"images": [SimpleUploadedFile("adult.dcm", film)]}, **HTMX).content.decode()
    assert "Film may be of another patient." in html
    for words in ("patient ID 9RG1 (record: MRN-A-1)", "name CompressedSamples RG1 (record: Ada Lovelace)",
                  "birth date 5 Mar 1940 (record: ", "sex M (record: F)"):  # fmt: skip
        assert words in html, words
    assert "the study carries this warning" in html
    settings.DICOM_PATIENT_MISMATCH = "refuse"
    html = client.post(url, {"images": [SimpleUploadedFile("adult.dcm", film)]}, **HTMX).content.decode()
    assert "The portal refuses this file for this patient." in html


def test_dicom_window_level_renders_the_film_through_the_chosen_window(owner, patient):
    import numpy as np
    from PIL import Image as PILImage

    study = StudyFactory(created_by=owner, patient=patient, films=[("film.dcm", _dicom_upload().read())])
    image = study.images.get()
    client = login_client(owner)
    url = reverse("image_preview", args=[image.pk])

    def pixels(**query: str) -> np.ndarray:
        response = client.get(url, query)
        assert response.status_code == 200 and response["Content-Type"] == "image/png"
        return np.asarray(PILImage.open(io.BytesIO(response.content)))

    full = pixels(wc="50", ww="100")
    narrow = pixels(wc="25", ww="10")
    assert full.std() > 0 and not np.array_equal(full, narrow)
    # A narrow window low in the range saturates most of the film white.
    assert (narrow == 255).mean() > 0.6 and (full == 255).mean() < 0.05
    assert client.get(url, {"wc": "500", "ww": "10"}).status_code == 400
    page = client.get(reverse("study_detail", args=[study.pk])).content.decode()
    assert "Window / level" in page and "data-window-centre" in page


def test_feedback_agree_and_correct_are_stored_audited_and_shown(owner, member, patient, active_model):
    study = StudyFactory(created_by=owner, patient=patient)
    prediction = PredictionFactory(
        study=study, model_version=active_model, probability=0.9, finish_study=True
    )  # pneumonia suspected
    url = reverse("feedback_submit", args=[prediction.pk])

    agree = login_client(owner).post(
        url, {"confirmed_label": "PNEUMONIA", "subtype": "viral", "comment": "RUL"}, **HTMX
    )
    assert agree.status_code == 200 and "your reading was recorded" in agree.content.decode()
    correct = login_client(member).post(url, {"confirmed_label": "NORMAL", "comment": "Artefact"})
    assert correct.status_code == 302

    first, second = Feedback.objects.order_by("pk")
    assert (first.agrees, first.confirmed_label, first.subtype, first.comment) == (True, "PNEUMONIA", "viral", "RUL")
    assert (second.agrees, second.confirmed_label, second.clinician) == (False, "NORMAL", member)
    assert AuditEvent.objects.filter(action="feedback.recorded").count() == 2
    page = login_client(owner).get(reverse("study_detail", args=[study.pk])).content.decode()
    assert "corrected the AI" in page and "Artefact" in page and "All readings (2)" in page


def test_feedback_refuses_a_subtype_for_a_normal_reading_and_stores_nothing(owner, patient, active_model):
    study = StudyFactory(created_by=owner, patient=patient)
    prediction = PredictionFactory(study=study, model_version=active_model, probability=0.9, finish_study=True)
    response = login_client(owner).post(
        reverse("feedback_submit", args=[prediction.pk]), {"confirmed_label": "NORMAL", "subtype": "viral"}, **HTMX
    )
    assert response.status_code == 400
    assert "applies only when your reading is pneumonia" in response.content.decode()
    assert not Feedback.objects.exists()


def test_pdf_report_has_the_facts_and_the_disclaimer_and_each_export_is_audited(owner, patient, active_model):
    from pypdf import PdfReader

    study = StudyFactory(created_by=owner, patient=patient, accession_number="ACC-77")
    prediction = PredictionFactory(study=study, model_version=active_model, probability=0.83, finish_study=True)
    client = login_client(owner)
    response = client.get(reverse("study_report", args=[study.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    assert "attachment" in response["Content-Disposition"]
    reader = PdfReader(io.BytesIO(response.content))
    text = " ".join(page.extract_text() for page in reader.pages)
    for expected in (
        "MRN-A-1",
        "ACC-77",
        "Pneumonia suspected",
        score_percent(prediction.probability, prediction.threshold),
        active_model.name,
        "not a diagnosis",
        "Generated",
    ):
        assert expected in text, expected
    assert sum(len(page.images) for page in reader.pages) >= 1
    client.get(reverse("study_report", args=[study.pk]))
    exports = AuditEvent.objects.filter(action="study.report_exported", object_id=str(study.pk), actor=owner)
    assert exports.count() == 2


def test_dicom_inspection_reads_headers_only(owner, patient):
    """The metadata panel never decodes pixels: a header with broken pixel data still shows its tags."""
    good = _dicom_upload(patient_id="HEADER-ONLY-7").read()
    broken = SimpleUploadedFile("broken.dcm", good[:-4000], content_type="application/dicom")
    html = (
        login_client(owner)
        .post(reverse("study_inspect_dicom", args=[patient.pk]), {"images": [broken]}, **HTMX)
        .content.decode()
    )
    assert "broken.dcm" in html and "HEADER-ONLY-7" in html and "corrupt" not in html
