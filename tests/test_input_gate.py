"""The input gate on the real worker path: a film that is not a frontal chest radiograph is
"not analysable" (no probability, the reason instead) on the pages, the API, the PDF and the
webhook payload; the study's result ignores it; ages outside 1-5 are flagged, not hidden."""

from __future__ import annotations

import datetime

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from diagnostics.integrations.webhooks.services import _study_payload
from diagnostics.models import AuditEvent, Prediction, Study
from ml.training import nonchest

from .conftest import api_client_for, jpeg_upload, login_client
from .images import FILMS_DIR
from .worker import wait_for_study

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def ct_upload() -> SimpleUploadedFile:
    data = nonchest.dicom_file(nonchest.ct_slice(256), Modality="CT", BodyPartExamined="CHEST")
    return SimpleUploadedFile("ct.dcm", data, content_type="application/dicom")


def photo_upload() -> SimpleUploadedFile:
    return SimpleUploadedFile("letter.png", nonchest._png(nonchest.letter()), content_type="image/png")


def test_a_ct_slice_beside_a_chest_film_is_not_analysable_and_the_study_result_is_the_films(
    owner, patient, active_model, celery_worker
):
    api = api_client_for(owner)
    response = api.post(
        reverse("api_study_list"),
        {"patient_id": patient.pk, "images": [ct_upload(), jpeg_upload()]},
        format="multipart",
    )
    assert response.status_code == 202, response.content
    study = wait_for_study(response.json()["id"], celery_worker)
    assert study.status == Study.Status.DONE, study.failure_reason

    refused = Prediction.objects.get(image__study=study, image__original_filename="ct.dcm")
    scored = Prediction.objects.get(image__study=study, image__original_filename="chest.jpeg")
    assert refused.outcome == Prediction.Outcome.NOT_ANALYSABLE
    assert refused.probability is None and refused.label == "" and refused.gate_code == "dicom_modality"
    assert "CT image" in refused.gate_reason
    assert scored.outcome == Prediction.Outcome.SCORED and scored.probability is not None
    assert study.latest_probability == pytest.approx(scored.probability)  # the refused film is ignored
    assert AuditEvent.objects.filter(action="prediction.not_analysable", object_id=str(refused.pk)).exists()

    detail = api.get(reverse("api_study_detail", kwargs={"study_id": study.pk})).json()
    by_name = {image["original_filename"]: image["predictions"][0] for image in detail["images"]}
    assert by_name["ct.dcm"]["outcome"] == "not_analysable"
    assert by_name["ct.dcm"]["probability"] is None and by_name["ct.dcm"]["label"] is None
    assert by_name["ct.dcm"]["not_analysable_check"] == "dicom_modality"
    assert "CT image" in by_name["ct.dcm"]["not_analysable_reason"]
    assert by_name["chest.jpeg"]["outcome"] == "scored" and by_name["chest.jpeg"]["not_analysable_reason"] is None

    payload = _study_payload(study)
    outcomes = sorted(image["predictions"][0]["outcome"] for image in payload["images"])
    assert outcomes == ["not_analysable", "scored"]

    client = login_client(owner)
    page = client.get(reverse("study_detail", args=[study.pk])).content.decode()
    assert "Not analysable" in page and "CT image" in page
    assert "1 of 2 films not analysable" in page  # the study's result says it ignores the refused film
    pdf = client.get(reverse("study_report", args=[study.pk]))
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")


def test_a_study_of_only_refused_files_is_done_not_analysable_and_never_sorted_as_suspicious(
    owner, patient, active_model, celery_worker
):
    client = login_client(owner)
    response = client.post(reverse("study_new", args=[patient.pk]), {"modality": "CR", "images": [photo_upload()]})
    assert response.status_code == 302
    study = wait_for_study(Study.objects.get().pk, celery_worker)
    assert study.status == Study.Status.DONE
    assert study.latest_probability is None and study.latest_label is None
    [prediction] = Prediction.objects.filter(image__study=study)
    assert prediction.outcome == Prediction.Outcome.NOT_ANALYSABLE
    worklist = client.get(reverse("worklist")).content.decode()
    assert "Not analysable" in worklist
    page = client.get(reverse("study_detail", args=[study.pk])).content.decode()
    assert "the AI could read none of this study" in page


def test_an_adult_patient_gets_a_result_with_an_outside_intended_use_warning(
    owner, patient, active_model, celery_worker
):
    patient.birth_date = datetime.date(1940, 3, 1)
    patient.save()
    film = np.asarray(Image.open(sorted(FILMS_DIR.glob("*.jpeg"))[0]), dtype=np.uint16) * 16
    dicom = nonchest.dicom_file(film, Modality="DX", BodyPartExamined="CHEST", ViewPosition="AP", StudyDate="20240301")
    client = login_client(owner)
    upload = SimpleUploadedFile("adult.dcm", dicom, content_type="application/dicom")
    client.post(reverse("study_new", args=[patient.pk]), {"modality": "DX", "images": [upload]})
    study = wait_for_study(Study.objects.get().pk, celery_worker)
    [prediction] = Prediction.objects.filter(image__study=study)
    assert prediction.outcome == Prediction.Outcome.SCORED and prediction.probability is not None
    assert "84 years" in prediction.intended_use_warning  # at the DICOM StudyDate, not today
    page = client.get(reverse("study_detail", args=[study.pk])).content.decode()
    assert "Outside intended use" in page
    body = api_client_for(owner).get(reverse("api_study_detail", kwargs={"study_id": study.pk})).json()
    assert "84 years" in body["images"][0]["predictions"][0]["intended_use_warning"]


def test_an_adult_age_in_the_dicom_header_is_flagged_even_when_the_record_says_child(
    owner, patient, active_model, celery_worker
):
    film = np.asarray(Image.open(sorted(FILMS_DIR.glob("*.jpeg"))[0]), dtype=np.uint16) * 16
    dicom = nonchest.dicom_file(film, Modality="CR", BodyPartExamined="CHEST", PatientAge="045Y")
    client = login_client(owner)
    upload = SimpleUploadedFile("adult.dcm", dicom, content_type="application/dicom")
    client.post(reverse("study_new", args=[patient.pk]), {"modality": "CR", "images": [upload]})
    study = wait_for_study(Study.objects.get().pk, celery_worker)
    [prediction] = Prediction.objects.filter(image__study=study)
    assert prediction.outcome == Prediction.Outcome.SCORED
    assert "45 years" in prediction.intended_use_warning
