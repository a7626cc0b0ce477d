"""Read and unread on the worklist and in the API: a study is read once a clinician has recorded a reading
(feedback) of one of its films' AI assessments. One filter (selectors.study_list_filter) serves both;
the worklist also shows each study's acquisition date (DICOM study date, else the upload day)."""

from __future__ import annotations

import datetime
import re

import pytest
from django.urls import reverse

from diagnostics.models import Image, Study
from diagnostics.selectors import study_list_filter, study_list_for_user, study_list_with_row_facts

from .conftest import api_client_for, login_client
from .factories import FeedbackFactory, ModelVersionFactory, PredictionFactory, StudyFactory
from .images import dicom_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def readings(owner, member, patient):
    """A study a team member has read, one the AI assessed that nobody has read, one still queued."""
    model = ModelVersionFactory()
    read = StudyFactory(patient=patient, seed=1, accession_number="READ")
    FeedbackFactory(
        prediction=PredictionFactory(study=read, model_version=model, probability=0.8, finish_study=True),
        clinician=member,
    )
    assessed = StudyFactory(patient=patient, seed=2, accession_number="ASSESSED")
    PredictionFactory(study=assessed, model_version=model, probability=0.3, finish_study=True)
    queued = StudyFactory(patient=patient, films=[("film.dcm", dicom_bytes())], accession_number="QUEUED")
    return {"read": read, "assessed": assessed, "queued": queued}


def ids(studies) -> set[int]:  # noqa: ANN001
    return {study.pk for study in studies}


def test_the_filter_splits_read_from_unread(owner, outsider, readings):
    mine = study_list_for_user(user=owner)
    assert ids(study_list_filter(mine, reading="read")) == {readings["read"].pk}
    assert ids(study_list_filter(mine, reading="unread")) == {readings["assessed"].pk, readings["queued"].pk}
    assert ids(study_list_filter(mine, reading="")) == ids(readings.values())
    assert not study_list_filter(study_list_for_user(user=outsider), reading="read").exists()
    rows = {study.pk: study for study in study_list_with_row_facts(mine)}
    assert [rows[readings[name].pk].read for name in ("read", "assessed", "queued")] == [True, False, False]


def test_the_worklist_shows_read_unread_and_the_acquisition_date_and_filters_by_reading(owner, readings):
    Study.objects.filter(pk=readings["assessed"].pk).update(
        created_at=datetime.datetime(2024, 2, 29, 10, tzinfo=datetime.UTC)
    )
    client = login_client(owner)
    page = client.get(reverse("worklist"), {"sort": "newest"}).content.decode()
    assert (
        '<th role="columnheader" scope="col">Reading</th>' in page
        and '<th role="columnheader" scope="col">Acquired</th>' in page
    )
    # Newest first: the DICOM study (its header's date), the read one (uploaded today), the older upload.
    assert re.findall(r'<td role="cell" class="reading"><span class="reading-\w+">(\w+)</span>', page) == [
        "Unread",
        "Read",
        "Unread",
    ]
    acquired = re.findall(r'<td role="cell" class="acquired" data-label="Acquired">(.*?)</td>', page)
    assert acquired[0] == '<span class="acquired-date">2024-01-02</span>'  # StudyDate of the DICOM film
    assert acquired[2] == '<span class="acquired-date">2024-02-29</span> <span class="muted">(uploaded)</span>'
    assert '<select name="reading"' in page and '<option value="unread">Unread</option>' in page

    only_unread = client.get(reverse("worklist"), {"reading": "unread"}).content.decode()
    assert "READ<" not in only_unread.replace("ASSESSED", "") and "QUEUED" in only_unread
    only_read = client.get(reverse("worklist"), {"reading": "read"}).content.decode()
    assert "· READ" in only_read and "ASSESSED" not in only_read and "QUEUED" not in only_read
    # The filter travels with the links to the study and back, like the others.
    assert f'href="/studies/{readings["read"].pk}/?reading=read"' in only_read


def test_the_study_date_of_the_first_film_that_has_one_is_the_acquisition_date(owner, patient):
    study = StudyFactory(patient=patient, films=[("a.dcm", dicom_bytes()), ("b.dcm", dicom_bytes(size=96))])
    first, second = study.images.all()
    Image.objects.filter(pk=first.pk).update(dicom_metadata={"Modality": "CR"})  # no StudyDate
    Image.objects.filter(pk=second.pk).update(dicom_metadata=second.dicom_metadata | {"StudyDate": "20231105"})
    [row] = study_list_with_row_facts(study_list_for_user(user=owner))
    assert row.dicom_study_date == "20231105"


def test_the_api_filters_studies_by_reading(owner, outsider, readings):
    api = api_client_for(owner)

    def listed(query: str) -> set[int]:
        response = api.get(f"/api/v1/studies/?{query}")
        assert response.status_code == 200, response.content
        return {row["id"] for row in response.json()["results"]}

    assert listed("reading=read") == {readings["read"].pk}
    assert listed("reading=unread") == {readings["assessed"].pk, readings["queued"].pk}
    assert listed("") == ids(readings.values())
    refused = api.get("/api/v1/studies/?reading=maybe")
    assert refused.status_code == 400 and list(refused.json()["error"]["fields"]) == ["reading"]
    assert api_client_for(outsider).get("/api/v1/studies/?reading=read").json()["results"] == []


def test_the_schema_declares_the_reading_filter(client):
    schema = client.get("/api/v1/schema/?format=json").json()
    parameters = {p["name"]: p for p in schema["paths"]["/api/v1/studies/"]["get"]["parameters"]}
    assert parameters["reading"]["in"] == "query"
    assert parameters["reading"]["schema"]["enum"] == ["read", "unread"]


def test_next_unread_follows_the_worklist_order_skips_read_studies_and_wraps(owner, member, patient):
    """The reading queue (issue 33, item 4): the worklist's 'Read the next unread study' and each study's
    'Next unread' go to the next unread study in the list's order and filters, at its reading form."""
    model = ModelVersionFactory()
    first, second, third, fourth = (StudyFactory(patient=patient, seed=n) for n in range(4))
    for study in (first, second, third, fourth):
        PredictionFactory(study=study, model_version=model, probability=0.4, finish_study=True)
    FeedbackFactory(prediction=second.images.get().predictions.get(), clinician=member)  # read: skipped
    client = login_client(owner)

    def next_unread(study: Study) -> str:
        page = client.get(reverse("study_detail", args=[study.pk]), {"sort": "oldest"}).content.decode()
        found = re.search(r'href="/studies/(\d+)/\?sort=oldest#reading" data-key="n" data-next-unread', page)
        return found.group(1) if found else ""

    assert next_unread(first) == str(third.pk)
    assert next_unread(third) == str(fourth.pk)
    assert next_unread(fourth) == str(first.pk)  # none after it: back to the first unread one
    worklist = client.get(reverse("worklist"), {"sort": "oldest"}).content.decode()
    assert f'href="/studies/{first.pk}/?sort=oldest#reading" data-key="n" data-next-unread' in worklist
    for study in (first, third, fourth):
        FeedbackFactory(prediction=study.images.get().predictions.get(), clinician=member)
    assert next_unread(first) == ""
    assert "No other unread study" in client.get(reverse("study_detail", args=[first.pk])).content.decode()
    assert "No unread study in this list." in client.get(reverse("worklist")).content.decode()
