"""Every page and API read of patient data leaves an audit event; a page polling the same thing within
AUDIT_READ_WINDOW_SECONDS leaves one, not one per poll."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.urls import reverse

from diagnostics.models import AuditEvent

from .conftest import api_client_for, login_client
from .factories import PredictionFactory, StudyFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_cache():
    cache.clear()


def events(action: str, **filters) -> list[AuditEvent]:  # noqa: ANN003
    return list(AuditEvent.objects.filter(action=action, **filters))


def test_page_reads_are_audited_once_per_window(owner, patient):
    study = StudyFactory(patient=patient)
    image = study.images.get()
    prediction = PredictionFactory(image=image, finish_study=True)
    client = login_client(owner)

    for url in (
        reverse("worklist"),
        reverse("patient_list"),
        reverse("study_live", args=[study.pk]),
        reverse("image_preview", args=[image.pk]),
    ):
        assert client.get(url).status_code == 200, url
        assert client.get(url).status_code == 200, url  # polled again within the window
    assert len(events("study.listed", actor=owner)) == 1
    assert len(events("patient.listed", actor=owner)) == 1
    [live] = events("study.viewed", actor=owner, object_id=str(study.pk))
    assert live.detail["via"] == "live" and live.team_id == owner.team_id
    assert len(events("image.viewed", actor=owner, object_id=str(image.pk))) == 1

    client.get(reverse("worklist"), {"status": "done"})  # another question: another event
    assert len(events("study.listed", actor=owner)) == 2
    assert prediction.pk


def test_api_lists_and_reads_are_audited(owner, patient):
    study = StudyFactory(patient=patient)
    prediction = PredictionFactory(image=study.images.get(), finish_study=True)
    api = api_client_for(owner)
    for name in ("api_patient_list", "api_study_list", "api_prediction_list"):
        assert api.get(reverse(name), {"limit": 5}).status_code == 200
    assert api.get(reverse("api_prediction_detail", args=[prediction.pk])).status_code == 200
    listed = {e.action: e.detail for e in AuditEvent.objects.filter(actor=owner, action__endswith=".listed")}
    assert set(listed) == {"patient.listed", "study.listed", "prediction.listed"}
    assert listed["study.listed"]["via"] == "api" and listed["study.listed"]["rows"] == 1
    assert "limit=5" in listed["study.listed"]["query"]
    assert events("prediction.viewed", actor=owner, object_id=str(prediction.pk))
