"""Every endpoint × every kind of caller: clinician, another team's clinician, admin, API client, anonymous.

The clinician and the API client belong to the team that owns the records; the
outsider to another team; the admin to none. Another team's record answers 404
exactly like a missing one; admin-only endpoints answer 403 to everyone else;
anonymous callers get 401. A test also checks that the matrix names every
operation in the OpenAPI schema, so a new endpoint cannot go untested.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from pydicom.uid import generate_uid
from rest_framework.test import APIClient

from diagnostics.models import ApiToken, AuditEvent
from tests.conftest import api_client_for, jpeg_upload
from tests.images import jpeg_bytes

from ..images import cr_film_bytes, dicom_bytes
from .conftest import Clinical

pytestmark = pytest.mark.django_db

ROLES = ("clinician", "outsider", "admin", "api_client", "anonymous")


@dataclass(frozen=True)
class Case:
    method: str
    path: str  # with {placeholders} filled from the Clinical fixture
    expected: dict[str, int]  # role -> status
    body: Callable[[Clinical], dict[str, Any]] | None = None
    format: str = "json"
    content_type: str | None = None
    raw: Callable[[], bytes] | None = None


def team_read(ok: int = 200) -> dict[str, int]:
    """A record of the team: its members see it, nobody else does."""
    return {"clinician": ok, "outsider": 404, "admin": 404, "api_client": ok, "anonymous": 401}


def everyone(ok: int = 200) -> dict[str, int]:
    return {"clinician": ok, "outsider": ok, "admin": ok, "api_client": ok, "anonymous": 401}


def admin_only(ok: int = 200) -> dict[str, int]:
    return {"clinician": 403, "outsider": 403, "admin": ok, "api_client": 403, "anonymous": 401}


def _study_fields(c: Clinical) -> dict[str, Any]:
    return {"patient_id": c.patient.pk, "accession_number": "ACC-M"}


CASES: dict[str, Case] = {
    "me_retrieve": Case("GET", "/api/v1/me/", everyone()),
    "patients_list": Case("GET", "/api/v1/patients/", everyone()),
    "patients_create": Case(
        "POST",
        "/api/v1/patients/",
        # Everyone with a team registers into their own team; the admin has none.
        {"clinician": 201, "outsider": 201, "admin": 403, "api_client": 201, "anonymous": 401},
        body=lambda c: {"medical_record_number": "MRN-NEW", "name": "New Child", "birth_date": "2022-02-02"},
    ),
    "patients_retrieve": Case("GET", "/api/v1/patients/{patient}/", team_read()),
    "studies_list": Case("GET", "/api/v1/studies/", everyone()),
    "studies_create": Case(
        "POST",
        "/api/v1/studies/",
        team_read(202),
        body=lambda c: {**_study_fields(c), "images": [jpeg_upload()]},
        format="multipart",
    ),
    "studies_create_json": Case(
        "POST",
        "/api/v1/studies/",
        team_read(202),
        body=lambda c: {
            **_study_fields(c),
            "images": [{"filename": "chest.jpeg", "content_base64": base64.b64encode(jpeg_bytes()).decode()}],
        },
    ),
    "studies_create_dicom": Case(
        "POST",
        "/api/v1/studies/dicom/?patient_id={patient}",
        team_read(202),
        content_type="application/dicom",
        raw=dicom_bytes,
    ),
    "studies_retrieve": Case("GET", "/api/v1/studies/{study}/", team_read()),
    "studies_webhook_deliveries_list": Case("GET", "/api/v1/studies/{study}/webhook-deliveries/", team_read()),
    "studies_fhir_report": Case("GET", "/api/v1/studies/{study}/fhir/", team_read()),
    "studies_pacs_deliveries_list": Case("GET", "/api/v1/studies/{study}/pacs-deliveries/", team_read()),
    "studies_acknowledgements_list": Case("GET", "/api/v1/studies/{study}/acknowledgements/", team_read()),
    # The fixture's study has a scored film: 'seen: no AI result' is refused (400, read it with feedback).
    "studies_acknowledgements_create": Case(
        "POST", "/api/v1/studies/{study}/acknowledgements/", team_read(400), body=lambda c: {"comment": "seen"}
    ),
    # FHIR (integrations/fhir/): the CapabilityStatement is open; a search answers only the caller's team.
    "fhir_metadata": Case("GET", "/fhir/metadata", {role: 200 for role in ROLES}),
    "fhir_diagnostic_report_search": Case("GET", "/fhir/DiagnosticReport?patient=patient-{patient}", everyone()),
    "fhir_diagnostic_report_read": Case("GET", "/fhir/DiagnosticReport/study-{study}", team_read()),
    "fhir_patient_read": Case("GET", "/fhir/Patient/patient-{patient}", team_read()),
    "fhir_binary_read": Case("GET", "/fhir/Binary/report-{study}", team_read()),
    # DICOMweb STOW-RS (integrations/dicomweb/): files into the caller's own team; the admin has none.
    "dicomweb_stow_studies": Case(
        "POST",
        "/dicomweb/studies",
        {"clinician": 200, "outsider": 200, "admin": 403, "api_client": 200, "anonymous": 401},
        content_type='multipart/related; type="application/dicom"; boundary=matrix',
        raw=lambda: (
            b"--matrix\r\nContent-Type: application/dicom\r\n\r\n"
            + cr_film_bytes(patient_id="MRN-STOW", study_uid=generate_uid())
            + b"\r\n--matrix--\r\n"
        ),
    ),
    "predictions_list": Case("GET", "/api/v1/predictions/", everyone()),
    "predictions_retrieve": Case("GET", "/api/v1/predictions/{prediction}/", team_read()),
    "predictions_retrieve_shadow": Case(
        # A shadow prediction is hidden even from its own team.
        "GET",
        "/api/v1/predictions/{shadow_prediction}/",
        {"clinician": 404, "outsider": 404, "admin": 404, "api_client": 404, "anonymous": 401},
    ),
    "predictions_feedback_list": Case("GET", "/api/v1/predictions/{prediction}/feedback/", team_read()),
    "predictions_feedback_create": Case(
        "POST",
        "/api/v1/predictions/{prediction}/feedback/",
        team_read(201),
        body=lambda c: {"agrees": False, "confirmed_label": "NORMAL", "comment": "clear lungs"},
    ),
    "predictions_acknowledgements_list": Case("GET", "/api/v1/predictions/{prediction}/acknowledgements/", team_read()),
    # The fixture's prediction is scored: a clinician's acknowledgement is refused (400, not analysable only).
    "predictions_acknowledgements_create": Case(
        "POST",
        "/api/v1/predictions/{prediction}/acknowledgements/",
        team_read(400),
        body=lambda c: {"comment": "seen"},
    ),
    "model_versions_list": Case("GET", "/api/v1/model-versions/", everyone()),
    "model_versions_retrieve": Case("GET", "/api/v1/model-versions/{active}/", everyone()),
    # No promotion gate is configured in this fixture: the admin gets the service's refusal (400).
    "model_versions_promote": Case("POST", "/api/v1/model-versions/{candidate}/promote/", admin_only(400)),
    "model_versions_rollback": Case("POST", "/api/v1/model-versions/{previous}/rollback/", admin_only()),
    "model_versions_archive": Case("POST", "/api/v1/model-versions/{candidate}/archive/", admin_only()),
    "model_versions_shadow": Case("POST", "/api/v1/model-versions/{candidate}/shadow/", admin_only()),
    "training_runs_list": Case("GET", "/api/v1/training-runs/", admin_only()),
    "training_runs_create": Case(
        "POST",
        "/api/v1/training-runs/",
        admin_only(202),
        body=lambda c: {"architecture": "cnn", "config": {"epochs": 2}},
    ),
    "training_runs_retrieve": Case("GET", "/api/v1/training-runs/{run}/", admin_only()),
    "training_runs_cancel": Case("POST", "/api/v1/training-runs/{run}/cancel/", admin_only()),
    "api_tokens_list": Case("GET", "/api/v1/api-tokens/", admin_only()),
    "api_tokens_create": Case(
        "POST", "/api/v1/api-tokens/", admin_only(201), body=lambda c: {"name": "PACS", "team_id": c.patient.team_id}
    ),
    "api_tokens_retrieve": Case("GET", "/api/v1/api-tokens/{token}/", admin_only()),
    "api_tokens_revoke": Case("POST", "/api/v1/api-tokens/{token}/revoke/", admin_only()),
}


@pytest.fixture(autouse=True)
def _training_data_configured(settings, tmp_path):
    # Starting a run only checks that a dataset is configured; the test transaction never commits,
    # so no training task is ever sent.
    settings.PNEUMONIA_DATA_DIR = str(tmp_path / "dataset")


class Callers:
    """The five kinds of caller, each client made (token stored, session signed in) when a test first asks for
    it: a test of one role needs one, and signing the admin in costs more than most requests."""

    def __init__(self, makers: dict[str, Callable[[], APIClient]]) -> None:
        self._makers = makers
        self._clients: dict[str, APIClient] = {}

    def __getitem__(self, role: str) -> APIClient:
        if role not in self._clients:
            self._clients[role] = self._makers[role]()
        return self._clients[role]


@pytest.fixture
def callers(owner, outsider, admin_user, machine) -> Callers:
    return Callers(
        {
            "clinician": lambda: api_client_for(owner),
            "outsider": lambda: api_client_for(outsider),
            "admin": lambda: _session_client(admin_user),
            "api_client": lambda: machine.client,
            "anonymous": APIClient,
        }
    )


def _session_client(user) -> APIClient:
    # Admins use the portal in a browser: session authentication.
    client = APIClient()
    client.force_login(user)
    return client


def _fill(path: str, c: Clinical, token: ApiToken) -> str:
    return path.format(
        patient=c.patient.pk,
        study=c.study.pk,
        prediction=c.prediction.pk,
        shadow_prediction=c.shadow_prediction.pk,
        active=c.active.pk,
        previous=c.previous.pk,
        candidate=c.candidate.pk,
        run=c.training_run.pk,
        token=token.pk,
    )


def _call(client: APIClient, case: Case, c: Clinical, token: ApiToken):
    path = _fill(case.path, c, token)
    if case.raw is not None:
        return client.generic(case.method, path, case.raw(), content_type=case.content_type)
    if case.method == "GET":
        return client.get(path)
    return client.post(path, case.body(c) if case.body else None, format=case.format)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", list(CASES))
def test_role_matrix(name, role, callers, clinical, admin_user, team):
    case = CASES[name]
    # A second token of the team for the token endpoints, so revoking it leaves the caller's own token alone.
    from .conftest import issue_client

    other_token = issue_client(admin=admin_user, team=team, name="spare").token
    response = _call(callers[role], case, clinical, other_token)
    expected = case.expected[role]
    assert response.status_code == expected, (name, role, response.content[:400])
    if expected >= 400 and case.path.startswith("/fhir/"):  # FHIR's own error shape
        [issue] = response.json()["issue"]
        assert issue["code"] and issue["diagnostics"], issue
    elif expected >= 400:
        error = response.json()["error"]
        assert error["code"] and error["message"], error


def test_list_endpoints_show_only_the_callers_team(callers, clinical, other_patient):
    for role in ("clinician", "api_client"):
        api = callers[role]
        assert [p["id"] for p in api.get("/api/v1/patients/").json()["results"]] == [clinical.patient.pk]
        assert [s["id"] for s in api.get("/api/v1/studies/").json()["results"]] == [clinical.study.pk]
        assert [p["id"] for p in api.get("/api/v1/predictions/").json()["results"]] == [clinical.prediction.pk]
    outsider = callers["outsider"]
    assert [p["id"] for p in outsider.get("/api/v1/patients/").json()["results"]] == [other_patient.pk]
    assert outsider.get("/api/v1/studies/").json()["results"] == []
    assert outsider.get("/api/v1/predictions/").json()["results"] == []
    admin = callers["admin"]
    for path in ("/api/v1/patients/", "/api/v1/studies/", "/api/v1/predictions/"):
        assert admin.get(path).json()["results"] == [], path


def test_shadow_predictions_never_appear(callers, clinical):
    api = callers["clinician"]
    detail = api.get(f"/api/v1/studies/{clinical.study.pk}/").json()
    [image] = detail["images"]
    assert [p["id"] for p in image["predictions"]] == [clinical.prediction.pk]
    assert detail["latest_probability"] == pytest.approx(0.83)
    # Filtering by the shadow model's id reveals nothing either.
    assert api.get(f"/api/v1/studies/?model_version={clinical.shadow.pk}").json()["results"] == []
    assert api.get(f"/api/v1/predictions/?model_version={clinical.shadow.pk}").json()["results"] == []


def test_state_changes_through_the_api_are_audited(callers, clinical):
    callers["clinician"].post(f"/api/v1/predictions/{clinical.prediction.pk}/feedback/", {"agrees": True})
    callers["admin"].post(f"/api/v1/model-versions/{clinical.previous.pk}/rollback/")
    response = callers["api_client"].post(
        "/api/v1/patients/", {"medical_record_number": "MRN-9", "name": "Nine", "birth_date": "2020-01-01"}
    )
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"feedback.recorded", "model.rolled_back", "patient.created", "api_token.issued"} <= actions
    assert AuditEvent.objects.get(action="patient.created", object_id=str(response.json()["id"])).actor.role == (
        "api_client"
    )


def test_the_matrix_covers_every_operation_in_the_schema(callers):
    schema = APIClient().get("/api/v1/schema/?format=json").json()
    operations = {
        operation["operationId"]
        for methods in schema["paths"].values()
        for method, operation in methods.items()
        if method in {"get", "post", "put", "patch", "delete"}
    }
    assert operations, "the schema lists no operations"
    assert operations - set(CASES) == set(), "endpoints missing from the role matrix"
