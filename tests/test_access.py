"""No page or endpoint shows another team's patient: owner, team member and outsider."""

from __future__ import annotations

import pytest
from django.urls import reverse

from diagnostics.models import Study
from diagnostics.services.images import image_validate_upload
from diagnostics.services.studies import study_create

from .conftest import api_client_for, login_client
from .images import jpeg_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def study(owner, patient) -> Study:
    upload = image_validate_upload(filename="chest.jpeg", data=jpeg_bytes())
    return study_create(user=owner, patient=patient, uploads=[upload], accession_number="ACC-1")


def page_urls(patient, study) -> list[str]:
    image = study.images.get()
    return [
        reverse("patient_detail", args=[patient.pk]),
        reverse("study_new", args=[patient.pk]),
        reverse("study_detail", args=[study.pk]),
        reverse("image_preview", args=[image.pk]),
    ]


def api_urls(patient, study) -> list[str]:
    return [
        reverse("api_patient_detail", args=[patient.pk]),
        reverse("api_study_detail", args=[study.pk]),
    ]


@pytest.mark.parametrize("who", ["owner", "member"])
def test_team_members_see_the_patient_everywhere(request, who, patient, study):
    user = request.getfixturevalue(who)
    client = login_client(user)
    for url in page_urls(patient, study):
        assert client.get(url).status_code == 200, url
    assert patient.name in client.get(reverse("patient_list")).content.decode()
    assert patient.name in client.get(reverse("worklist")).content.decode()
    api = api_client_for(user)
    for url in api_urls(patient, study):
        assert api.get(url).status_code == 200, url
    assert [p["id"] for p in api.get(reverse("api_patient_list")).json()["results"]] == [patient.pk]
    assert [s["id"] for s in api.get(reverse("api_study_list")).json()["results"]] == [study.pk]


def test_outsider_sees_nothing_of_another_team(outsider, patient, study):
    client = login_client(outsider)
    for url in page_urls(patient, study):
        assert client.get(url).status_code == 404, url
    for url in (reverse("patient_list"), reverse("worklist")):
        body = client.get(url).content.decode()
        assert patient.name not in body and patient.medical_record_number not in body, url
    api = api_client_for(outsider)
    for url in api_urls(patient, study):
        assert api.get(url).status_code == 404, url
    assert api.get(reverse("api_patient_list")).json()["results"] == []
    assert api.get(reverse("api_study_list")).json()["results"] == []


def test_outsider_cannot_upload_a_study_for_another_teams_patient(outsider, patient):
    api = api_client_for(outsider)
    response = api.post(
        reverse("api_study_list"),
        {"patient_id": patient.pk, "images": [_upload()]},
        format="multipart",
    )
    assert response.status_code == 404
    assert not Study.objects.exists()


def test_anonymous_is_sent_to_login_or_refused(patient, study, client):
    for url in page_urls(patient, study):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login")), url
    for url in api_urls(patient, study):
        assert client.get(url).status_code == 401, url


def _upload():
    from .conftest import jpeg_upload

    return jpeg_upload()
