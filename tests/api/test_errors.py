"""Every error answers {"error": {"code", "message"[, "fields"]}}; clients are throttled per token."""

from __future__ import annotations

import pytest
from django.contrib.staticfiles import finders
from rest_framework.test import APIClient

from diagnostics.api.errors import api_exception_handler
from tests.conftest import api_client_for

from .conftest import issue_client

pytestmark = pytest.mark.django_db


def test_validation_errors_name_each_field(machine):
    response = machine.client.post("/api/v1/patients/", {"name": "", "birth_date": "31/12/2020"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert set(error["fields"]) == {"medical_record_number", "name", "birth_date"}
    assert all(isinstance(message, str) for messages in error["fields"].values() for message in messages)
    assert "birth_date:" in error["message"] and "medical_record_number:" in error["message"]


def test_a_service_refusal_keeps_its_message(machine, patient):
    response = machine.client.post(
        "/api/v1/patients/",
        {"medical_record_number": patient.medical_record_number, "name": "Dup", "birth_date": "2020-01-01"},
    )
    assert response.status_code == 400
    message = f"A patient with record number {patient.medical_record_number} already exists in your team."
    assert response.json()["error"]["fields"] == {"medical_record_number": [message]}


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("get", "/api/v1/no-such-endpoint/", {}, 404, "not_found"),
        ("get", "/api/v1/patients/999999/", {}, 404, "not_found"),
        ("delete", "/api/v1/patients/", {}, 405, "method_not_allowed"),
        ("post", "/api/v1/patients/", {"data": "<x/>", "content_type": "text/xml"}, 415, "unsupported_media_type"),
        ("post", "/api/v1/patients/", {"data": "{oops", "content_type": "application/json"}, 400, "malformed_request"),
        ("get", "/api/v1/api-tokens/", {}, 403, "permission_denied"),
    ],
)
def test_errors_have_one_shape(machine, method, path, kwargs, status, code):
    response = getattr(machine.client, method)(path, **kwargs)
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"] and body["error"]["code"] == code and body["error"]["message"]


def test_a_missing_final_slash_is_pointed_out(machine):
    response = machine.client.get("/api/v1/patients")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == (
        "No API endpoint at /api/v1/patients. Did you mean /api/v1/patients/ (with the final slash)?"
    )


def test_an_unexpected_failure_is_a_json_500_and_is_logged(caplog):
    response = api_exception_handler(RuntimeError("boom"), {"view": None})
    assert response.status_code == 500
    assert response.data == {
        "error": {"code": "server_error", "message": "The server could not complete the request; it has been logged."}
    }
    assert "boom" in caplog.text


def test_clients_are_throttled_per_token(settings, machine, admin_user, team):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"client": "3/minute", "anonymous": "100/minute"},
    }
    for _ in range(3):
        assert machine.client.get("/api/v1/me/").status_code == 200
    throttled = machine.client.get("/api/v1/me/")
    assert throttled.status_code == 429
    assert throttled.json()["error"]["code"] == "throttled" and int(throttled["Retry-After"]) > 0
    # Another client of the same team has its own allowance.
    assert issue_client(admin=admin_user, team=team, name="other").client.get("/api/v1/me/").status_code == 200


def test_anonymous_requests_get_401_with_a_bearer_challenge():
    response = APIClient().get("/api/v1/studies/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert response.json()["error"]["code"] == "not_authenticated"


def test_the_browser_session_needs_a_csrf_token_for_writes(owner):
    browser = APIClient(enforce_csrf_checks=True)
    browser.force_login(owner)
    assert browser.get("/api/v1/patients/").status_code == 200
    body = {"medical_record_number": "M", "name": "N", "birth_date": "2020-01-01"}
    response = browser.post("/api/v1/patients/", body)
    assert response.status_code == 403 and "CSRF" in response.json()["error"]["message"]


def test_the_schema_and_swagger_ui_are_served_without_a_cdn(client):
    schema = client.get("/api/v1/schema/?format=json")
    assert schema.status_code == 200
    body = schema.json()
    assert body["openapi"].startswith("3.") and "apiToken" in body["components"]["securitySchemes"]
    assert body["components"]["schemas"]["Error"]["properties"]["error"]
    page = client.get("/api/v1/docs/").content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    # Swagger UI starts from a script file, not an inline one (the CSP allows no inline script).
    assert "/api/v1/docs/?script=" in page or "?script" in page
    assert client.get("/api/v1/docs/?script=").status_code == 200
    assert "cdn" not in page.lower() and "unpkg" not in page.lower()
    # The assets ship with the project (collectstatic finds them), not fetched from the internet.
    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")


def test_api_client_for_uses_a_real_token(owner):
    # The shared helper authenticates through ApiTokenAuthentication, not a shortcut.
    me = api_client_for(owner).get("/api/v1/me/").json()
    assert me["username"] == owner.username and me["token_name"] == f"test token of {owner.username}"
