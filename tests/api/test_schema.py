"""What the OpenAPI schema promises a generated client, checked on the schema itself (fast).

test_generated_client.py generates a client from it and runs the workflow; these say which promise broke.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from rest_framework.test import APIClient

from diagnostics.integrations.webhooks.apis import StudyFinishedEventSerializer
from diagnostics.integrations.webhooks.services import _study_payload

from ..factories import PredictionFactory, StudyFactory

pytestmark = pytest.mark.django_db

ID_FILTERS = {"patient", "study", "image", "model_version", "team"}


@pytest.fixture(scope="module")
def schema(django_db_blocker) -> dict[str, Any]:
    with django_db_blocker.unblock():
        return APIClient().get("/api/v1/schema/?format=json").json()


def operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                yield path, method, operation


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def test_id_filters_are_integers(schema):
    seen = set()
    for _path, _method, operation in operations(schema):
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "query" and parameter["name"] in ID_FILTERS:
                assert parameter["schema"]["type"] == "integer", (operation["operationId"], parameter)
                seen.add(parameter["name"])
    assert seen == ID_FILTERS


def test_every_page_size_has_its_default_and_bounds(schema):
    lists = 0
    for _path, _method, operation in operations(schema):
        parameters = {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "query"}
        if "limit" in parameters:
            lists += 1
            assert parameters["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}
            assert parameters["offset"]["schema"] == {"type": "integer", "minimum": 0, "default": 0}
    assert lists >= 7


def test_no_value_matches_two_branches_of_a_one_of(schema):
    # "" is a string of length 0 whatever its format says, so a blank alternative must be anyOf.
    blank = {"type": "string", "maxLength": 0}
    assert not [node for node in walk(schema) if blank in node.get("oneOf", [])]
    json_input = schema["components"]["schemas"]["JsonStudyInputRequest"]["properties"]
    assert json_input["callback_url"]["anyOf"][1] == blank


def test_response_headers_clients_act_on_are_declared(schema):
    creates = {"studies_create", "studies_create_dicom"}
    for _path, _method, operation in operations(schema):
        responses = operation["responses"]
        if "429" in responses:
            assert responses["429"]["headers"]["Retry-After"]["schema"]["type"] == "integer"
        if operation["operationId"] in creates:
            headers = responses["202"]["headers"]
            assert headers["Location"]["required"] is True
            assert headers["Idempotent-Replayed"]["schema"]["enum"] == ["false", "true"]
            creates.discard(operation["operationId"])
    assert not creates
    training = schema["paths"]["/api/v1/training-runs/"]["post"]["responses"]["202"]
    assert "Location" in training["headers"]


def test_the_raw_dicom_upload_offers_a_media_type_every_generator_sends(schema):
    body = schema["paths"]["/api/v1/studies/dicom/"]["post"]["requestBody"]
    assert body["required"] is True
    assert set(body["content"]) == {"application/dicom", "application/octet-stream"}


def test_ordering_takes_several_fields(schema):
    parameters = schema["paths"]["/api/v1/studies/"]["get"]["parameters"]
    [ordering] = [p for p in parameters if p["name"] == "ordering"]
    assert ordering["schema"]["type"] == "array" and "-created_at" in ordering["schema"]["items"]["enum"]
    assert "repeated" in ordering["description"]


def test_the_webhook_is_declared_as_a_callback_of_both_creations(schema):
    for path, expression in (
        ("/api/v1/studies/", "{$request.body#/callback_url}"),
        ("/api/v1/studies/dicom/", "{$request.query.callback_url}"),
    ):
        callback = schema["paths"][path]["post"]["callbacks"]["studyFinished"][expression]["post"]
        body = callback["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": "#/components/schemas/StudyFinishedEvent"}
        headers = {p["name"] for p in callback["parameters"] if p["in"] == "header"}
        assert headers == {"X-Portal-Event", "X-Portal-Delivery", "X-Portal-Timestamp", "X-Portal-Signature"}


def test_the_declared_webhook_payload_is_the_one_sent(owner, patient):
    study = StudyFactory(created_by=owner, patient=patient, accession_number="ACC-1")
    PredictionFactory(image=study.images.get(), probability=0.8, finish_study=True)
    study.refresh_from_db()
    payload = _study_payload(study)
    declared = StudyFinishedEventSerializer(data=payload)
    assert declared.is_valid(), declared.errors
    assert set(declared.fields) == set(payload)
    assert set(declared.fields["images"].child.fields) == set(payload["images"][0])
    prediction_fields = declared.fields["images"].child.fields["predictions"].child.fields
    assert set(prediction_fields) == set(payload["images"][0]["predictions"][0])
