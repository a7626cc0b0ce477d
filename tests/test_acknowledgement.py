"""Every study can be closed: a film the AI could not assess has no label to agree with, so a clinician
acknowledges it ("seen: no AI result") and its study leaves Unread, on the worklist, in its filter and in
the API alike (selectors.study_read_exists owns the rule)."""

from __future__ import annotations

import io

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse

from diagnostics.models import Acknowledgement, AuditEvent, Prediction, Study
from diagnostics.selectors import study_list_filter, study_list_for_user, study_list_with_row_facts
from diagnostics.services.feedback import acknowledgement_record, study_acknowledge_no_ai_result

from .conftest import api_client_for, login_client
from .factories import ModelVersionFactory, PredictionFactory, StudyFactory
from .images import jpeg_bytes

pytestmark = pytest.mark.django_db


def refuse(study: Study, *, image=None, role: str = Prediction.Role.PRIMARY) -> Prediction:  # noqa: ANN001
    """What the worker stores when the input gate refuses a film: no score, no label, the reason."""
    image = image if image is not None else study.images.get()
    model = ModelVersionFactory()
    prediction = Prediction.objects.create(
        image=image, model_version=model, role=role, outcome=Prediction.Outcome.NOT_ANALYSABLE,
        gate_code="not_chest", gate_reason="The image does not look like a chest X-ray.", threshold=model.threshold,
        latency_ms=3.0, model_sha256=model.sha256, preprocessing_version=model.preprocessing_version,
        input_sha256=image.sha256,
    )  # fmt: skip
    Study.objects.filter(pk=study.pk).update(status=Study.Status.DONE)
    return prediction


@pytest.fixture
def refused(patient) -> Study:
    """A done study of two films, both refused by the input gate."""
    study = StudyFactory(patient=patient, films=[("a.jpeg", jpeg_bytes(seed=1)), ("b.jpeg", jpeg_bytes(seed=2))])
    for image in study.images.all():
        refuse(study, image=image)
    return study


def unread_ids(user) -> set[int]:  # noqa: ANN001
    return {study.pk for study in study_list_filter(study_list_for_user(user=user), reading="unread")}


def test_acknowledging_a_refused_film_reads_its_study_everywhere(owner, member, refused):
    prediction = Prediction.objects.filter(image__study=refused).first()
    assert refused.pk in unread_ids(owner)
    api = api_client_for(owner)
    assert api.get(f"/api/v1/studies/{refused.pk}/").json()["read"] is False

    acknowledgement = acknowledgement_record(user=member, prediction=prediction, comment=" rotated ")

    assert acknowledgement.comment == "rotated"
    assert refused.pk not in unread_ids(owner)
    assert {s.pk for s in study_list_filter(study_list_for_user(user=owner), reading="read")} == {refused.pk}
    [row] = study_list_with_row_facts(study_list_for_user(user=owner))
    assert row.read is True
    assert api.get(f"/api/v1/studies/{refused.pk}/").json()["read"] is True
    listed = api.get("/api/v1/studies/?reading=read").json()["results"]
    assert [(study["id"], study["read"]) for study in listed] == [(refused.pk, True)]
    assert api.get("/api/v1/studies/?reading=unread").json()["results"] == []
    event = AuditEvent.objects.get(action="acknowledgement.recorded")
    assert (event.actor, event.detail) == (member, {"prediction": prediction.pk, "gate_code": "not_chest"})


def test_a_scored_film_is_read_not_acknowledged(owner, patient):
    study = StudyFactory(patient=patient)
    scored = PredictionFactory(study=study, probability=0.9, finish_study=True)
    with pytest.raises(ValidationError, match="record a reading"):
        acknowledgement_record(user=owner, prediction=scored)
    assert not Acknowledgement.objects.exists()


def test_a_shadow_refusal_or_another_teams_film_cannot_be_acknowledged(owner, outsider, patient):
    study = StudyFactory(patient=patient)
    shadow = refuse(study, role=Prediction.Role.SHADOW)
    with pytest.raises(ValidationError, match="shown to clinicians"):
        acknowledgement_record(user=owner, prediction=shadow)
    primary = refuse(study)
    with pytest.raises(PermissionDenied):
        acknowledgement_record(user=outsider, prediction=primary)
    assert not Acknowledgement.objects.exists()


def test_the_study_button_acknowledges_every_refused_film_once(owner, refused):
    client = login_client(owner)
    page = client.get(reverse("study_detail", args=[refused.pk])).content.decode()
    assert "Seen: no AI result" in page and f'action="/studies/{refused.pk}/acknowledge/"' in page

    answer = client.post(reverse("study_acknowledge", args=[refused.pk]), {"next_query": "reading=unread&x=1"})

    assert answer.status_code == 302
    assert answer["Location"] == f"/studies/{refused.pk}/?reading=unread#reading"
    assert Acknowledgement.objects.filter(prediction__image__study=refused, clinician=owner).count() == 2
    assert refused.pk not in unread_ids(owner)
    page = client.get(reverse("study_detail", args=[refused.pk])).content.decode()
    assert "Seen by a clinician: no AI result." in page and f'action="/studies/{refused.pk}/acknowledge/"' not in page
    with pytest.raises(ValidationError, match="No film of this study"):
        study_acknowledge_no_ai_result(
            user=owner, study=study_list_for_user(user=owner).prefetch_related("images__predictions").get()
        )
    worklist = client.get(reverse("worklist")).content.decode()
    assert '<span class="reading-read">Read</span>' in worklist
    from pypdf import PdfReader

    report = PdfReader(io.BytesIO(client.get(reverse("study_report", args=[refused.pk])).content))
    text = " ".join(" ".join(page.extract_text().split()) for page in report.pages)
    assert "Image 1 AI: not analysable. Seen by alice" in text and "Image 2 AI: not analysable. Seen by alice" in text


def test_the_film_form_acknowledges_one_film_and_htmx_gets_the_section_back(owner, outsider, refused):
    first, second = Prediction.objects.filter(image__study=refused).order_by("image__pk")
    client = login_client(owner)
    url = reverse("acknowledge", args=[first.pk])
    answer = client.post(url, {"comment": "looked myself"}, HTTP_HX_REQUEST="true")
    assert answer.status_code == 200
    html = answer.content.decode()
    assert f'id="acknowledge-{first.pk}"' in html and "Recorded: you have seen image 1" in html
    assert "Seen, no AI result: <strong>alice</strong>" in html and "looked myself" in html
    again = client.post(url, HTTP_HX_REQUEST="true")  # a second acknowledgement is history, not an error
    assert again.status_code == 200 and Acknowledgement.objects.filter(prediction=first).count() == 2
    assert not Acknowledgement.objects.filter(prediction=second).exists()
    assert login_client(outsider).post(url).status_code == 404


def test_the_api_records_and_lists_acknowledgements_and_refuses_a_scored_film(owner, outsider, refused, patient):
    prediction = Prediction.objects.filter(image__study=refused).first()
    api = api_client_for(owner)
    url = f"/api/v1/predictions/{prediction.pk}/acknowledgements/"
    created = api.post(url, {"comment": "seen"}, format="json")
    assert created.status_code == 201
    assert created.json() | {"created_at": None} == {
        "id": created.json()["id"], "study_id": refused.pk, "prediction_id": prediction.pk, "clinician": "alice",
        "comment": "seen",
        "created_at": None,
    }  # fmt: skip
    assert [item["comment"] for item in api.get(url).json()["results"]] == ["seen"]
    scored = PredictionFactory(study=StudyFactory(patient=patient), probability=0.2, finish_study=True)
    refused_answer = api.post(f"/api/v1/predictions/{scored.pk}/acknowledgements/", {}, format="json")
    assert refused_answer.status_code == 400
    assert api_client_for(outsider).post(url, {}, format="json").status_code == 404


FAILURE = "The model could not be loaded: no active AI model is registered."


@pytest.fixture
def failed(patient) -> Study:
    """A study whose analysis failed before any film was assessed: no prediction at all."""
    study = StudyFactory(patient=patient, films=[("a.jpeg", jpeg_bytes(seed=3))])
    Study.objects.filter(pk=study.pk).update(status=Study.Status.FAILED, failure_reason=FAILURE)
    study.refresh_from_db()
    return study


def _for(user, study: Study) -> Study:  # noqa: ANN001
    from diagnostics.selectors import study_get_for_user

    return study_get_for_user(user=user, study_id=study.pk)


def test_a_failed_study_with_no_prediction_is_closed_by_acknowledging_the_study(owner, member, failed):
    assert not Prediction.objects.filter(image__study=failed).exists()
    assert failed.pk in unread_ids(owner)

    [acknowledgement] = study_acknowledge_no_ai_result(user=member, study=_for(member, failed), comment=" by hand ")

    assert (acknowledgement.study_id, acknowledgement.prediction_id, acknowledgement.comment) == (
        failed.pk, None, "by hand"
    )  # fmt: skip
    assert failed.pk not in unread_ids(owner)
    [row] = study_list_with_row_facts(study_list_for_user(user=owner))
    assert row.read is True
    event = AuditEvent.objects.get(action="acknowledgement.recorded")
    assert (event.actor, event.object_id) == (member, str(acknowledgement.pk))
    assert event.detail == {"study": failed.pk, "status": "failed", "failure_reason": FAILURE}
    with pytest.raises(ValidationError, match="No film of this study is waiting"):
        study_acknowledge_no_ai_result(user=owner, study=_for(owner, failed))
    assert Acknowledgement.objects.count() == 1


def test_a_study_with_a_score_or_still_in_progress_is_not_acknowledged(owner, outsider, patient, failed):
    scored = PredictionFactory(study=StudyFactory(patient=patient), probability=0.8, finish_study=True)
    with pytest.raises(ValidationError, match="record a reading"):
        study_acknowledge_no_ai_result(user=owner, study=_for(owner, scored.image.study))
    running = StudyFactory(patient=patient)
    Study.objects.filter(pk=running.pk).update(status=Study.Status.RUNNING)
    with pytest.raises(ValidationError, match="still analysing"):
        study_acknowledge_no_ai_result(user=owner, study=_for(owner, running))
    with pytest.raises(PermissionDenied):
        study_acknowledge_no_ai_result(user=outsider, study=failed)
    assert not Acknowledgement.objects.exists()


def test_a_done_study_with_a_refused_film_and_a_film_never_assessed_is_closed_once(owner, patient):
    study = StudyFactory(patient=patient, films=[("a.jpeg", jpeg_bytes(seed=4)), ("b.jpeg", jpeg_bytes(seed=5))])
    first, _second = study.images.order_by("pk")
    refused_film = refuse(study, image=first)

    acknowledged = study_acknowledge_no_ai_result(user=owner, study=_for(owner, study))

    assert sorted((a.prediction_id or 0) for a in acknowledged) == [0, refused_film.pk]
    assert study.pk not in unread_ids(owner)


def test_the_study_page_shows_the_reason_and_closes_a_failed_study(owner, failed):
    client = login_client(owner)
    page = client.get(reverse("study_detail", args=[failed.pk])).content.decode()
    assert FAILURE in page and "the AI assessment failed" in page
    assert f'action="/studies/{failed.pk}/acknowledge/"' in page and "for this study" in page

    answer = client.post(reverse("study_acknowledge", args=[failed.pk]), {"next_query": "reading=unread"})

    assert answer["Location"] == f"/studies/{failed.pk}/?reading=unread#reading"
    page = client.get(answer["Location"]).content.decode()
    assert "Recorded: you have seen this study; it has no AI result." in page
    assert "Seen by a clinician: no AI result. <strong>alice</strong>" in page
    assert f'action="/studies/{failed.pk}/acknowledge/"' not in page
    worklist = client.get(reverse("worklist")).content.decode()
    assert '<span class="reading-read">Read</span>' in worklist
    from pypdf import PdfReader

    report = PdfReader(io.BytesIO(client.get(reverse("study_report", args=[failed.pk])).content))
    text = " ".join(" ".join(page.extract_text().split()) for page in report.pages)
    assert "Seen by a clinician: no AI result. alice" in text


def test_the_api_acknowledges_a_failed_study_and_lists_it(owner, outsider, failed, refused):
    api = api_client_for(owner)
    url = f"/api/v1/studies/{failed.pk}/acknowledgements/"
    assert api.get(f"/api/v1/studies/{failed.pk}/").json()["read"] is False
    created = api.post(url, {"comment": "read by hand"}, format="json")
    assert created.status_code == 201, created.content
    [item] = created.json()
    assert (item["study_id"], item["prediction_id"], item["clinician"], item["comment"]) == (
        failed.pk, None, "alice", "read by hand"
    )  # fmt: skip
    assert [entry["id"] for entry in api.get(url).json()["results"]] == [item["id"]]
    assert api.get(f"/api/v1/studies/{failed.pk}/").json()["read"] is True
    assert api.post(url, {}, format="json").status_code == 400  # nothing left to acknowledge
    # The study endpoint acknowledges a not-analysable study's refused films too, each with its prediction.
    both = api.post(f"/api/v1/studies/{refused.pk}/acknowledgements/", {}, format="json").json()
    assert sorted(entry["prediction_id"] for entry in both) == sorted(
        Prediction.objects.filter(image__study=refused).values_list("pk", flat=True)
    )
    assert api_client_for(outsider).post(url, {}, format="json").status_code == 404
    assert api_client_for(outsider).get(url).status_code == 404
