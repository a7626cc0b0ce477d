"""Study creation in every upload format, idempotent retries, and the list's filters, ordering and pages."""

from __future__ import annotations

import base64
import datetime

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from diagnostics.models import AuditEvent, IdempotencyRecord, Image, Study
from tests.conftest import api_client_for, jpeg_upload
from tests.images import jpeg_bytes, png_bytes

from ..factories import ModelVersionFactory, PredictionFactory, StudyFactory
from ..images import dicom_bytes

pytestmark = pytest.mark.django_db


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_json_upload_with_base64_images_creates_a_queued_study(machine, patient):
    response = machine.client.post(
        "/api/v1/studies/",
        {
            "patient_id": patient.pk,
            "accession_number": "ACC-J",
            "modality": "DX",
            "view_position": "PA",
            "images": [
                {"filename": "front.jpeg", "content_base64": b64(jpeg_bytes(seed=1))},
                {"filename": "side.png", "content_base64": b64(png_bytes(seed=2))},
            ],
        },
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "queued" and response["Location"] == body["status_url"]
    study = Study.objects.get(pk=body["id"])
    assert (study.accession_number, study.modality, study.view_position) == ("ACC-J", "DX", "PA")
    images = sorted(study.images.values_list("format", "original_filename"))
    assert images == [("JPEG", "front.jpeg"), ("PNG", "side.png")]
    assert study.created_by == machine.token.user
    detail = machine.client.get(body["status_url"]).json()
    assert detail["status"] == "queued" and len(detail["images"]) == 2


def test_json_upload_refuses_bad_base64_and_non_images_with_field_errors(machine, patient):
    response = machine.client.post(
        "/api/v1/studies/",
        {"patient_id": patient.pk, "images": [{"filename": "x.jpeg", "content_base64": "not base64!"}]},
    )
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"images": ["This is not valid base64."]}

    response = machine.client.post(
        "/api/v1/studies/",
        {"patient_id": patient.pk, "images": [{"filename": "report.pdf", "content_base64": b64(b"%PDF-1.7 nope")}]},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["fields"] == {"images": ["report.pdf: This file is not a JPEG, PNG or DICOM image."]}
    assert not Study.objects.exists() and not Image.objects.exists()


def test_a_raw_dicom_body_creates_a_study_with_modality_and_view_from_its_tags(machine, patient):
    response = machine.client.generic(
        "POST",
        f"/api/v1/studies/dicom/?patient_id={patient.pk}&accession_number=ACC-D",
        dicom_bytes(modality="DX", view_position="AP", patient_id="MRN-A-1"),
        content_type="application/dicom",
    )
    assert response.status_code == 202, response.content
    study = Study.objects.get(pk=response.json()["id"])
    assert (study.modality, study.view_position, study.accession_number) == ("DX", "AP", "ACC-D")
    image = study.images.get()
    assert image.format == "DICOM" and image.dicom_metadata["PatientID"] == "MRN-A-1"

    # The query string wins over the tags.
    response = machine.client.generic(
        "POST",
        f"/api/v1/studies/dicom/?patient_id={patient.pk}&modality=CR&view_position=PA",
        dicom_bytes(modality="DX", view_position="AP", patient_id="MRN-A-1"),
        content_type="application/dicom",
    )
    study = Study.objects.get(pk=response.json()["id"])
    assert (study.modality, study.view_position) == ("CR", "PA")


def test_a_raw_dicom_body_may_come_as_octet_stream_the_type_client_generators_send(machine, patient):
    response = machine.client.generic(
        "POST",
        f"/api/v1/studies/dicom/?patient_id={patient.pk}",
        dicom_bytes(modality="DX", view_position="AP"),
        content_type="application/octet-stream",
    )
    assert response.status_code == 202, response.content
    image = Study.objects.get(pk=response.json()["id"]).images.get()
    assert image.format == "DICOM"
    # Judged by content, whatever the type says.
    response = machine.client.generic(
        "POST", f"/api/v1/studies/dicom/?patient_id={patient.pk}", b"%PDF-1.7", content_type="application/octet-stream"
    )
    assert response.status_code == 400 and response.json()["error"]["fields"]["images"]


def test_a_dicom_body_that_is_not_dicom_or_is_empty_is_refused(machine, patient):
    for body in (b"", jpeg_bytes()[:50]):
        response = machine.client.generic(
            "POST", f"/api/v1/studies/dicom/?patient_id={patient.pk}", body, content_type="application/dicom"
        )
        assert response.status_code == 400, response.content
        assert response.json()["error"]["fields"]["images"]
    response = machine.client.generic(
        "POST", f"/api/v1/studies/dicom/?patient_id={patient.pk}", dicom_bytes(), content_type="image/jpeg"
    )
    assert response.status_code == 415 and response.json()["error"]["code"] == "unsupported_media_type"
    assert not Study.objects.exists()


def test_a_retry_with_the_same_idempotency_key_returns_the_same_study(machine, patient):
    def post():
        return machine.client.post(
            "/api/v1/studies/",
            {"patient_id": patient.pk, "accession_number": "ACC-I", "images": [jpeg_upload()]},
            format="multipart",
            HTTP_IDEMPOTENCY_KEY="7f1c2a9e-retry",
        )

    first, second = post(), post()
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert (first["Idempotent-Replayed"], second["Idempotent-Replayed"]) == ("false", "true")
    assert Study.objects.count() == 1 and Image.objects.count() == 1
    assert AuditEvent.objects.filter(action="study.created").count() == 1
    assert IdempotencyRecord.objects.get().key == "7f1c2a9e-retry"


def test_the_same_key_with_a_different_request_is_refused_with_422(machine, patient):
    key = {"HTTP_IDEMPOTENCY_KEY": "same-key"}
    first = machine.client.post(
        "/api/v1/studies/", {"patient_id": patient.pk, "images": [jpeg_upload(seed=1)]}, format="multipart", **key
    )
    assert first.status_code == 202
    other_image = machine.client.post(
        "/api/v1/studies/", {"patient_id": patient.pk, "images": [jpeg_upload(seed=2)]}, format="multipart", **key
    )
    other_field = machine.client.post(
        "/api/v1/studies/",
        {"patient_id": patient.pk, "accession_number": "X", "images": [jpeg_upload(seed=1)]},
        format="multipart",
        **key,
    )
    for response in (other_image, other_field):
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["code"] == "idempotency_key_reused"
        assert f"created study {first.json()['id']}" in error["message"]
    assert Study.objects.count() == 1


def test_a_key_matches_the_same_request_whatever_format_carried_it(machine, patient):
    data = jpeg_bytes(seed=3)
    key = {"HTTP_IDEMPOTENCY_KEY": "cross-format"}
    multipart = machine.client.post(
        "/api/v1/studies/",
        {"patient_id": patient.pk, "images": [SimpleUploadedFile("c.jpeg", data, content_type="image/jpeg")]},
        format="multipart",
        **key,
    )
    as_json = machine.client.post(
        "/api/v1/studies/",
        {"patient_id": patient.pk, "images": [{"filename": "c.jpeg", "content_base64": b64(data)}]},
        **key,
    )
    assert multipart.json()["id"] == as_json.json()["id"] and as_json["Idempotent-Replayed"] == "true"


def test_keys_belong_to_their_user(machine, owner, patient):
    key = {"HTTP_IDEMPOTENCY_KEY": "shared-key"}
    body = {"patient_id": patient.pk, "images": [{"filename": "c.jpeg", "content_base64": b64(jpeg_bytes())}]}
    first = machine.client.post("/api/v1/studies/", body, **key)
    second = api_client_for(owner).post("/api/v1/studies/", body, **key)
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] != second.json()["id"]


def test_an_unusable_idempotency_key_is_refused(machine, patient):
    body = {"patient_id": patient.pk, "images": [{"filename": "c.jpeg", "content_base64": b64(jpeg_bytes())}]}
    response = machine.client.post("/api/v1/studies/", body, HTTP_IDEMPOTENCY_KEY="x" * 201)
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["error"]["fields"]
    assert not Study.objects.exists()


def test_callback_urls_must_be_http_and_need_a_token(machine, owner, patient):
    body = {"patient_id": patient.pk, "images": [{"filename": "c.jpeg", "content_base64": b64(jpeg_bytes())}]}
    for url in ("ftp://his.example/hook", "file:///etc/passwd", "javascript:alert(1)", "not a url"):
        response = machine.client.post("/api/v1/studies/", {**body, "callback_url": url})
        assert response.status_code == 400, url
        assert list(response.json()["error"]["fields"]) == ["callback_url"]
    session = api_client_for(owner)
    session.credentials()
    session.force_login(owner)
    response = session.post("/api/v1/studies/", {**body, "callback_url": "https://his.example/hook"})
    assert response.status_code == 400 and "API token" in response.json()["error"]["message"]
    response = machine.client.post("/api/v1/studies/", {**body, "callback_url": "https://his.example/hook"})
    assert response.status_code == 202
    assert Study.objects.get().callback_url == "https://his.example/hook"


@pytest.fixture
def worklist(owner, patient, other_patient):
    """Three studies of the team with different outcomes, models and dates, and one of another team."""
    from tests.factories import PatientFactory

    second_patient = PatientFactory(team=patient.team, created_by=owner, name="Bea Second")
    old_model, new_model = ModelVersionFactory(name="cnn@old"), ModelVersionFactory(name="cnn@new")
    positive = StudyFactory(created_by=owner, patient=patient, seed=1, accession_number="A-POS")
    negative = StudyFactory(created_by=owner, patient=second_patient, seed=2, accession_number="A-NEG")
    queued = StudyFactory(created_by=owner, patient=patient, seed=3, accession_number="A-QUEUED")
    PredictionFactory(image=positive.images.get(), model_version=new_model, probability=0.91)
    PredictionFactory(image=negative.images.get(), model_version=old_model, probability=0.07)
    Study.objects.filter(pk__in=[positive.pk, negative.pk]).update(status=Study.Status.DONE)
    Study.objects.filter(pk=positive.pk).update(created_at=datetime.datetime(2024, 3, 1, 12, tzinfo=datetime.UTC))
    Study.objects.filter(pk=negative.pk).update(created_at=datetime.datetime(2024, 3, 5, 12, tzinfo=datetime.UTC))
    return {
        "positive": positive,
        "negative": negative,
        "queued": queued,
        "old": old_model,
        "new": new_model,
        "second_patient": second_patient,
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["queued", "negative", "positive"]),
        ("?status=done", ["negative", "positive"]),
        ("?status=queued", ["queued"]),
        ("?label=PNEUMONIA", ["positive"]),
        ("?label=NORMAL", ["negative"]),
        ("?created_after=2024-03-02&created_before=2024-03-31", ["negative"]),
        ("?created_before=2024-03-01", ["positive"]),
        ("?accession_number=A-POS", ["positive"]),
        ("?ordering=created_at", ["positive", "negative", "queued"]),
        ("?ordering=-probability&status=done", ["positive", "negative"]),
    ],
)
def test_studies_filter_and_order(machine, worklist, query, expected):
    results = machine.client.get(f"/api/v1/studies/{query}").json()["results"]
    assert [r["id"] for r in results] == [worklist[name].pk for name in expected]


def test_studies_filter_by_patient_and_model_version(machine, worklist, patient):
    ids = lambda query: [r["id"] for r in machine.client.get(f"/api/v1/studies/?{query}").json()["results"]]  # noqa: E731
    assert ids(f"patient={worklist['second_patient'].pk}") == [worklist["negative"].pk]
    assert ids(f"patient={patient.pk}&ordering=id") == [worklist["positive"].pk, worklist["queued"].pk]
    assert ids(f"model_version={worklist['new'].pk}") == [worklist["positive"].pk]
    assert ids(f"model_version={worklist['old'].pk}") == [worklist["negative"].pk]


def test_predictions_filter_by_label_model_and_study(machine, worklist):
    def ids(query):
        return [r["study_id"] for r in machine.client.get(f"/api/v1/predictions/?{query}").json()["results"]]

    assert ids("label=PNEUMONIA") == [worklist["positive"].pk]
    assert ids(f"model_version={worklist['old'].pk}") == [worklist["negative"].pk]
    assert ids(f"study={worklist['positive'].pk}") == [worklist["positive"].pk]
    assert ids("ordering=probability") == [worklist["negative"].pk, worklist["positive"].pk]


def test_lists_are_paginated_with_limit_and_offset(machine, worklist):
    page = machine.client.get("/api/v1/studies/?limit=2&ordering=created_at").json()
    assert page["count"] == 3 and len(page["results"]) == 2 and page["previous"] is None
    assert "offset=2" in page["next"]
    rest = machine.client.get(page["next"]).json()
    assert [r["id"] for r in rest["results"]] == [worklist["queued"].pk] and rest["next"] is None
    assert len(machine.client.get("/api/v1/studies/?limit=200&offset=0").json()["results"]) == 3


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("limit=0", "Must be from 1 to 200; 0 is not."),
        ("limit=-1", "Must be from 1 to 200; -1 is not."),
        ("limit=201", "Must be from 1 to 200; 201 is not."),
        ("limit=100000", "Must be from 1 to 200; 100000 is not."),
        ("limit=ten", "A whole number is required."),
        ("limit=2.5", "A whole number is required."),
        ("limit=", "A whole number is required."),
        ("limit=2&limit=3", "Give this parameter once."),
        ("offset=-1", "Must be 0 or more; -1 is not."),
        ("offset=x", "A whole number is required."),
    ],
)
def test_an_unusable_limit_or_offset_is_refused_not_replaced_by_the_default(machine, worklist, query, message):
    response = machine.client.get(f"/api/v1/studies/?{query}")
    assert response.status_code == 400
    name = query.split("=")[0]
    assert response.json()["error"] == {
        "code": "validation_error",
        "message": f"{name}: {message}",
        "fields": {name: [message]},
    }


def test_several_ordering_fields_apply_in_order_comma_separated_or_repeated(machine, worklist):
    def ids(query):
        response = machine.client.get(f"/api/v1/studies/?{query}")
        assert response.status_code == 200, response.content
        return [r["id"] for r in response.json()["results"]]

    in_order = [worklist[name].pk for name in ("positive", "negative", "queued")]
    assert ids("ordering=created_at,-id") == in_order
    # The repeated (exploded) form, which generated clients send, keeps every field, not the last one.
    assert ids("ordering=created_at&ordering=-id") == in_order
    assert ids("ordering=-id") == in_order[::-1]  # what keeping only the last field would give


def test_a_repeated_single_valued_filter_is_refused(machine, worklist):
    response = machine.client.get("/api/v1/studies/?status=done&status=queued")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"status": ["Give this parameter once."]}


def test_a_bad_date_filter_is_reported_under_its_own_name(machine):
    for list_path in ("/api/v1/studies/", "/api/v1/patients/", "/api/v1/predictions/"):
        for name in ("created_after", "created_before"):
            response = machine.client.get(f"{list_path}?{name}=yesterday")
            assert response.status_code == 400
            assert list(response.json()["error"]["fields"]) == [name], list_path
    response = machine.client.get("/api/v1/patients/?birth_date_before=soon")
    assert list(response.json()["error"]["fields"]) == ["birth_date_before"]


@pytest.mark.parametrize(
    "query",
    [
        "status=exploded",
        "created_after=yesterday",
        "created_before=2024-13-01",
        "label=maybe",
        "patient=abc",
        "patient=1.5",
        "model_version=2.5",
        "ordering=password",
        "ordering=created_at,password",
        "ordering=created_at&ordering=password",
    ],
)
def test_a_bad_filter_answers_400_naming_the_parameter(machine, worklist, query):
    response = machine.client.get(f"/api/v1/studies/?{query}")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error" and list(error["fields"]) == [query.split("=")[0]]


# --- a study's warnings and why it has no result (issue 29 items 4 and 5) ---


def test_a_raw_dicom_body_of_another_patient_is_accepted_with_a_warning_or_refused_where_configured(
    machine, patient, settings
):
    """The header of dicom_bytes names patient TEST-001; this record is MRN-A-1."""
    url = f"/api/v1/studies/dicom/?patient_id={patient.pk}"
    response = machine.client.generic("POST", url, dicom_bytes(patient_id="TEST-001"), content_type="application/dicom")
    assert response.status_code == 202, response.content
    detail = machine.client.get(response.json()["status_url"]).json()
    [warning] = [w for w in detail["warnings"] if w["code"] == "wrong_patient"]
    assert warning["mismatched_fields"] == ["patient_id"] and warning["title"] == "Film may be of another patient"
    assert "patient ID TEST-001 (record: MRN-A-1)" in warning["message"]
    assert warning["image_ids"] == [Study.objects.get().images.get().pk]

    settings.DICOM_PATIENT_MISMATCH = "refuse"
    response = machine.client.generic("POST", url, dicom_bytes(patient_id="TEST-001"), content_type="application/dicom")
    assert response.status_code == 400
    [message] = response.json()["error"]["fields"]["images"]
    assert message.startswith("upload.dcm: its DICOM header disagrees with the record of Ada Lovelace (MRN-A-1)")
    assert Study.objects.count() == 1
    assert (
        machine.client.generic(
            "POST", url, dicom_bytes(patient_id=" MRN-A-1 "), content_type="application/dicom"
        ).status_code
        == 202
    )  # the same ID, padded: not a difference


def test_the_study_says_why_it_has_no_result_and_lists_its_warnings(machine, patient):
    import datetime as _dt

    from diagnostics.models import Prediction

    patient.birth_date = _dt.date.today() - _dt.timedelta(days=190)  # six months old
    patient.save()
    study = StudyFactory(created_by=machine.token.user, patient=patient)
    model = ModelVersionFactory()
    Prediction.objects.create(
        image=study.images.get(), model_version=model, outcome="not_analysable", gate_code="dicom_modality",
        gate_reason="This is a CT image.", threshold=0.5, latency_ms=1.0, model_sha256="0" * 64,
        preprocessing_version="v", input_sha256="0" * 64,
    )  # fmt: skip
    Study.objects.filter(pk=study.pk).update(status=Study.Status.DONE)
    detail = machine.client.get(f"/api/v1/studies/{study.pk}/").json()
    assert detail["no_result_reason"] == "The AI could not read the study's film. Image 1: This is a CT image."
    assert [w["code"] for w in detail["warnings"]] == ["outside_intended_use"]
    assert detail["warnings"][0]["message"].startswith("When the film was taken the patient was 6 months old")
    [listed] = machine.client.get("/api/v1/studies/").json()["results"]
    assert listed["warnings"] == detail["warnings"] and "no_result_reason" not in listed
