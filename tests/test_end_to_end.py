"""Upload to stored prediction through a real Celery worker, PostgreSQL and Redis."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils.html import escape

from diagnostics.formatting.numbers import score_percent
from diagnostics.models import Prediction, Study

from .conftest import api_client_for, jpeg_upload, login_client
from .worker import wait_for_study

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_api_upload_is_predicted_by_the_worker_and_shown_on_page_and_api(owner, patient, active_model, celery_worker):
    api = api_client_for(owner)
    response = api.post(
        reverse("api_study_list"),
        {"patient_id": patient.pk, "accession_number": "ACC-42", "images": [jpeg_upload()]},
        format="multipart",
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "queued" and body["status_url"].endswith(f"/api/v1/studies/{body['id']}/")

    study = wait_for_study(body["id"], celery_worker)
    assert study.status == Study.Status.DONE, f"{study.failure_reason}\n{celery_worker.log_tail()}"
    prediction = Prediction.objects.get(image__study=study)
    assert prediction.model_version == active_model
    # The worker kept the study's current result (the worklist's triage key) in step.
    assert study.latest_probability == pytest.approx(prediction.probability)
    assert study.latest_label == prediction.label

    detail = api.get(body["status_url"]).json()
    [image] = detail["images"]
    [api_prediction] = image["predictions"]
    assert detail["status"] == "done"
    assert api_prediction["probability"] == pytest.approx(prediction.probability)
    assert api_prediction["label"] == prediction.label and api_prediction["model_version"] == active_model.name

    page = login_client(owner).get(reverse("study_detail", args=[study.pk])).content.decode()
    # The score as the formatting owner writes it beside its threshold ('< 0.1 %' escaped as '&lt; 0.1 %').
    assert f"<strong>{escape(score_percent(prediction.probability, prediction.threshold))}</strong>" in page
    assert f"threshold of {escape(score_percent(prediction.threshold, prediction.probability))}" in page
    assert active_model.name in page
    assert "not a diagnosis" in page


def test_without_an_active_model_the_worker_fails_the_study_with_a_reason(owner, patient, celery_worker):
    client = login_client(owner)
    response = client.post(reverse("study_new", args=[patient.pk]), {"modality": "CR", "images": [jpeg_upload()]})
    assert response.status_code == 302
    study = wait_for_study(Study.objects.get().pk, celery_worker)
    assert study.status == Study.Status.FAILED
    assert "No active AI model" in study.failure_reason
    page = client.get(reverse("study_detail", args=[study.pk])).content.decode()
    assert "No active AI model" in page
