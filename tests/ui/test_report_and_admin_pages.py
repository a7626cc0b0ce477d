"""Issue 17, findings 8 to 11, in a real browser at desktop width and at 390 px, axe at zero violations:
the study page (the patient's age on the day of the study, the DICOM information in words, times with
their zone), the patient page (age today), the upload's DICOM panel, the admin's model version page
(manifest and metrics as tables) and its training form in the embedded default (why it cannot start).

No Celery worker: the studies are made by the factories.
"""

from __future__ import annotations

import datetime
import re

import numpy as np
import pytest
from django.urls import reverse
from playwright.sync_api import expect

from diagnostics.models import Study

from ..factories import AdminFactory, FeedbackFactory, PatientFactory, PredictionFactory, StudyFactory
from ..images import chest_like_pixels
from .test_clinician_journey import log_in
from .test_clinician_pages import WIDTHS, assert_axe_clean, assert_fits_the_screen

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(params=WIDTHS)
def width(request, page) -> int:
    page.set_viewport_size({"width": request.param, "height": 900})
    return request.param


def dicom_film(**tags: str) -> bytes:
    from ml.training.nonchest import dicom_file

    header = {"PatientID": "MRN-A-1", "PatientAge": "002Y", "StudyDate": "20240102", "Modality": "CR",
              "ViewPosition": "PA", "BodyPartExamined": "CHEST"}  # fmt: skip
    return dicom_file(chest_like_pixels(128).astype(np.uint16) * 16, **{**header, **tags})


def test_the_study_page_gives_the_age_the_dicom_header_in_words_and_zoned_times(
    page, live_server, width, owner, team, active_model
):
    owner.first_name, owner.last_name = "Alice", "Martin"
    owner.save()
    patient = PatientFactory(team=team, created_by=owner, name="Ada Lovelace", birth_date=datetime.date(2021, 3, 4))
    study = StudyFactory(created_by=owner, patient=patient, films=[("film.dcm", dicom_film())])
    prediction = PredictionFactory(study=study, model_version=active_model, probability=0.9, finish_study=True)
    FeedbackFactory(prediction=prediction, clinician=owner, agrees=True, comment="Right upper lobe")

    log_in(page, live_server, owner.username)
    page.goto(live_server.url + reverse("study_detail", args=[study.pk]))
    facts = page.locator(".study-facts")
    expect(facts).to_contain_text("2021-03-04 (aged 2 y 9 mo on 2 Jan 2024, the day of the study)")
    expect(facts.locator("time")).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d UTC$"))
    expect(facts.locator("time")).to_have_attribute("title", "UTC time")
    verdict = page.locator(".verdict")
    expect(verdict).to_contain_text("Alice Martin (alice)")
    expect(verdict.locator("time")).to_have_text(re.compile(r" UTC$"))

    details = page.locator(".dicom-details")
    details.locator("summary").click()
    for label, value in (("Study date", "2 Jan 2024"), ("Patient's age", "2 years"),
                         ("View position", "PA (posteroanterior)"), ("Body part examined", "Chest")):  # fmt: skip
        expect(details.locator("dt", has_text=label)).to_be_visible()
        expect(details.locator(f'dt:text-is("{label}") + dd')).to_have_text(value)
    expect(details).not_to_contain_text("StudyDate")
    assert_fits_the_screen(page)
    assert_axe_clean(page, f"issue17-study-{width}")
    assert page.js_errors == [], page.js_errors


def test_the_patient_page_gives_the_age_today_and_zoned_times(page, live_server, width, owner, team):
    from django.utils import timezone

    today = timezone.localdate()
    patient = PatientFactory(team=team, created_by=owner, birth_date=today.replace(year=today.year - 4, day=1))
    StudyFactory(created_by=owner, patient=patient)
    log_in(page, live_server, owner.username)
    page.goto(live_server.url + reverse("patient_detail", args=[patient.pk]))
    expect(page.locator("main dl.facts")).to_contain_text(re.compile(r"\(aged 4 y \d+ mo today\)"))
    expect(page.locator("main table time")).to_have_text(re.compile(r" UTC$"))
    assert_fits_the_screen(page)
    assert_axe_clean(page, f"issue17-patient-{width}")
    assert page.js_errors == [], page.js_errors


def test_the_upload_panel_writes_the_dicom_header_in_words(page, live_server, width, owner, patient):
    log_in(page, live_server, owner.username)
    page.goto(live_server.url + reverse("study_new", args=[patient.pk]))
    page.get_by_label("Choose files").set_input_files(
        [{"name": "film.dcm", "mimeType": "application/dicom", "buffer": dicom_film(PatientAge="018M")}]
    )
    panel = page.locator("#dicom-metadata")
    expect(panel).to_contain_text("What the DICOM files say")
    expect(panel.locator('dt:text-is("Study date") + dd')).to_have_text("2 Jan 2024")
    expect(panel.locator('dt:text-is("Patient\'s age") + dd')).to_have_text("18 months")
    expect(panel.locator('dt:text-is("Modality") + dd')).to_have_text("CR (computed radiography)")
    assert_fits_the_screen(page)
    assert_axe_clean(page, f"issue17-upload-dicom-{width}")
    assert page.js_errors == [], page.js_errors


def test_the_model_version_page_shows_tables_not_json(page, live_server, width, team, active_model):
    admin = AdminFactory(username="ada-root", team=team, is_superuser=True)
    log_in(page, live_server, admin.username)
    page.goto(live_server.url + reverse("admin:diagnostics_modelversion_change", args=[active_model.pk]))
    validation = page.locator("table.metrics-table").first
    expect(validation.locator("caption")).to_contain_text("Validation")
    expect(validation.locator('th:text-is("ROC AUC") + td')).to_have_text(
        f"{active_model.metrics['validation']['roc_auc']:.4f}"
    )
    expect(page.get_by_role("region", name="Manifest")).to_contain_text(active_model.preprocessing_version)
    expect(page.locator("main")).not_to_contain_text('"roc_auc"')
    assert_fits_the_screen(page)  # a wide table scrolls in its own region
    assert_axe_clean(page, f"issue17-admin-model-version-{width}")
    assert page.js_errors == [], page.js_errors


def test_the_training_form_in_the_embedded_default_says_why_it_cannot_start(page, live_server, width, team, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True  # the embedded default: no broker, no training worker
    settings.PNEUMONIA_DATA_DIR = ""
    admin = AdminFactory(username="ada-root", team=team, is_superuser=True)
    log_in(page, live_server, admin.username)
    page.goto(live_server.url + reverse("admin:diagnostics_trainingrun_add"))
    notice = page.locator("#training-unavailable")
    expect(notice).to_contain_text("Training cannot run on this installation")
    expect(notice).to_contain_text("CELERY_BROKER_URL")
    expect(notice).to_contain_text("PNEUMONIA_DATA_DIR")
    expect(page.get_by_role("button", name="Review…")).to_be_disabled()
    expect(page.get_by_label("Epochs")).to_be_disabled()
    assert_fits_the_screen(page)
    assert_axe_clean(page, f"issue17-admin-training-unavailable-{width}")
    assert page.js_errors == [], page.js_errors
    assert not Study.objects.exists()
