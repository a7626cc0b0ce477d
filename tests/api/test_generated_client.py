"""A client generated from the live /api/v1/schema/ with openapi-python-client runs the whole workflow.

An administrator signs in and issues a token; the machine client registers a patient, sends films in all
three formats (multipart, JSON with base64, a raw DICOM body), polls each study until it is done, receives
the signed webhooks and parses them with the generated model, pages and orders lists, refuses a bad page
size and sends feedback: everything through the generated code, nothing by hand but the sign-in form.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib
import io
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from django.conf import settings
from django.urls import reverse

from diagnostics.models import Study

from ..images import dicom_bytes, jpeg_bytes
from ..integrations.webhooks.receiver import WebhookReceiver
from ..two_factor import authenticator_code, authenticator_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # a real Celery worker; the generator runs as a subprocess

PACKAGE = "portal_client"
# The one thing the generator cannot use, and need not: the DICOM upload's application/dicom body, which the
# schema also offers as application/octet-stream (the generated function sends that).
EXPECTED_WARNINGS = [
    ("WARNING", "parsing POST /api/v1/studies/dicom/ within studies.", "Unsupported content type application/dicom"),
    # STOW-RS is DICOMweb (PS3.18), sent by PACSes and DICOMweb clients, not by a generated REST client.
    (
        "WARNING",
        "parsing POST /dicomweb/studies within dicomweb. Endpoint will not be generated.",
        "Unsupported content type multipart/related",
    ),
]
NOT_GENERATED = {"dicomweb_stow_studies"}


@pytest.fixture
def client_package(portal_server, tmp_path) -> Iterator[ModuleType]:
    """The client openapi-python-client generates from the served schema, imported as `portal_client`."""
    config = tmp_path / "generator.yaml"
    config.write_text(f"package_name_override: {PACKAGE}\npost_hooks: []\n")
    output = tmp_path / "generated"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--url",
            f"{portal_server}/api/v1/schema/",
            "--meta",
            "none",
            "--output-path",
            str(output / PACKAGE),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    assert re.findall(r"^(WARNING|ERROR) (.*)\n\n(.*)$", report, flags=re.M) == EXPECTED_WARNINGS, report
    assert report.count("will not be generated") == len(NOT_GENERATED)

    schema = httpx.get(f"{portal_server}/api/v1/schema/?format=json").json()
    generated = {path.stem for path in (output / PACKAGE / "api").glob("*/*.py")}
    operations = {op["operationId"] for methods in schema["paths"].values() for op in methods.values()}
    assert operations - generated == NOT_GENERATED, "operations the generated client lacks"

    sys.path.insert(0, str(output))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(output))
        for name in [name for name in sys.modules if name == PACKAGE or name.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def _csrf_token(page: httpx.Response) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert match, page.text
    return match[1]


def sign_in(portal: str, username: str, password: str, *, code: Callable[[], str]) -> dict[str, str]:
    """The browser's sign-in form, then the authenticator's code (an administrator must give one);
    returns the session's cookies."""
    with httpx.Client(base_url=portal) as browser:
        answer = browser.post(
            "/login/",
            data={
                "username": username,
                "password": password,
                "csrfmiddlewaretoken": _csrf_token(browser.get("/login/")),
            },
        )
        assert answer.status_code == 302, answer.text
        verify = reverse("two_factor_verify")
        answer = browser.post(verify, data={"code": code(), "csrfmiddlewaretoken": _csrf_token(browser.get(verify))})
        assert answer.status_code == 302, answer.text
        return {cookie.name: cookie.value for cookie in browser.cookies.jar}


def api(name: str) -> Any:
    """A generated operation module, e.g. api("studies.studies_create")."""
    return importlib.import_module(f"{PACKAGE}.api.{name}")


def models() -> Any:
    return importlib.import_module(f"{PACKAGE}.models")


def poll_until_finished(client: Any, study_id: int, timeout: float = 150) -> Any:
    retrieve = api("studies.studies_retrieve")
    deadline = time.monotonic() + timeout
    while True:
        study = retrieve.sync(client=client, study_id=study_id)
        if study.status.value in ("done", "failed") or time.monotonic() > deadline:
            return study
        time.sleep(0.5)


def query_value(url: str, name: str) -> int:
    return int(parse_qs(urlsplit(url).query)[name][0])


@pytest.fixture
def issued(client_package, portal_server, admin_user, team) -> Any:
    """The system's token, issued through the API by an administrator signed in with a session."""
    admin_user.set_password("correct horse battery")
    admin_user.save()
    device = authenticator_for(admin_user)
    cookies = sign_in(
        portal_server, admin_user.username, "correct horse battery", code=lambda: authenticator_code(device)
    )
    with client_package.Client(
        base_url=portal_server,
        cookies=cookies,
        headers={"X-CSRFToken": cookies[settings.CSRF_COOKIE_NAME]},
        timeout=httpx.Timeout(60),
        raise_on_unexpected_status=True,
    ) as admin:
        issued = api("api_tokens.api_tokens_create").sync(
            client=admin, body=models().ApiTokenIssueRequest(name="Generated client", team_id=team.pk)
        )
    assert isinstance(issued, models().IssuedApiTokenOutput), issued
    return issued


@pytest.fixture
def client(client_package, portal_server, issued) -> Iterator[Any]:
    """The machine client with its bearer token; closed after the test, so that no kept-alive connection
    holds a server thread (and its database connection) open past the live server."""
    with client_package.AuthenticatedClient(
        base_url=portal_server, token=issued.key, timeout=httpx.Timeout(60), raise_on_unexpected_status=True
    ) as client:
        yield client


@pytest.mark.django_db(transaction=True)
def test_a_generated_client_runs_the_whole_workflow(client, issued, active_model, celery_worker):
    m = models()
    types = importlib.import_module(f"{PACKAGE}.types")
    assert api("me.me_retrieve").sync(client=client).token_name == "Generated client"

    patient = api("patients.patients_create").sync(
        client=client,
        body=m.PatientCreateRequest(
            medical_record_number="MRN-GEN-1", name="Gen Client", birth_date=date(2022, 3, 4), sex=m.SexEnum.F
        ),
    )
    assert isinstance(patient, m.PatientOutput), patient

    film = jpeg_bytes(seed=7)
    create = api("studies.studies_create")
    create_dicom = api("studies.studies_create_dicom")
    with WebhookReceiver() as receiver:
        # Multipart, with an Idempotency-Key: the retry answers the same study, and the headers say so.
        key = str(uuid.uuid4())

        def multipart() -> Any:
            return create.sync_detailed(
                client=client,
                idempotency_key=key,
                body=m.MultipartStudyInputRequest(
                    patient_id=patient.id,
                    images=[types.File(payload=io.BytesIO(film), file_name="chest.jpeg", mime_type="image/jpeg")],
                    accession_number="GEN-1",
                    modality=m.ModalityEnum.DX,
                    view_position=m.ViewPositionEnum.PA,
                    callback_url=receiver.url,
                ),
            )

        first, replay = multipart(), multipart()
        assert first.status_code == 202, first.content
        assert first.headers["Location"] == first.parsed.status_url
        assert (first.headers["Idempotent-Replayed"], replay.headers["Idempotent-Replayed"]) == ("false", "true")
        assert replay.parsed.id == first.parsed.id

        # JSON with base64: the same film, so its probability ties with the first study's (ordering below).
        as_json = create.sync_detailed(
            client=client,
            body=m.JsonStudyInputRequest(
                patient_id=patient.id,
                accession_number="GEN-2",
                images=[m.Base64ImageRequest(content_base64=base64.b64encode(film).decode(), filename="chest.jpeg")],
            ),
        )
        assert as_json.status_code == 202, as_json.content

        # The raw DICOM body, fields in the query string.
        raw = create_dicom.sync_detailed(
            client=client,
            body=types.File(payload=io.BytesIO(dicom_bytes(modality="DX", view_position="AP")), file_name="x.dcm"),
            patient_id=patient.id,
            accession_number="GEN-3",
            callback_url=receiver.url,
            idempotency_key=str(uuid.uuid4()),
        )
        assert raw.status_code == 202, raw.content
        assert raw.headers["Location"] == raw.parsed.status_url

        ids = [first.parsed.id, as_json.parsed.id, raw.parsed.id]
        studies = [poll_until_finished(client, study_id) for study_id in ids]
        assert [s.status.value for s in studies] == ["done"] * 3, (
            [(s.status, s.failure_reason) for s in studies],
            celery_worker.log_tail(),
        )
        # `format` is a Python builtin: the generated attribute is format_, the JSON key stays "format".
        assert [s.images[0].format_.value for s in studies] == ["JPEG", "JPEG", "DICOM"]
        assert studies[2].view_position.value == "AP"  # from the file's tags
        prediction = studies[0].images[0].predictions[0]
        assert prediction.model_version == active_model.name

        # Both studies with a callback_url are announced, signed; the generated model parses the body.
        received = receiver.wait_for(2, timeout=60)
        assert len(received) == 2, celery_worker.log_tail()
    events = {}
    for delivery in received:
        timestamp = delivery.headers["X-Portal-Timestamp"]
        expected = hmac.new(
            issued.webhook_secret.encode(), f"{timestamp}.".encode() + delivery.body, hashlib.sha256
        ).hexdigest()
        assert delivery.headers["X-Portal-Signature"] == f"sha256={expected}"
        event = m.StudyFinishedEvent.from_dict(json.loads(delivery.body))
        events[event.study_id] = event
    assert set(events) == {ids[0], ids[2]}
    assert all(event.status.value == "done" and event.event.value == "study.finished" for event in events.values())
    assert events[ids[0]].images[0].predictions[0].id == prediction.id
    deliveries = api("studies.studies_webhook_deliveries_list").sync(client=client, study_id=ids[2])
    assert m.StudyFinishedEvent.from_dict(deliveries.results[0].payload).study_id == ids[2]

    # Lists: integer id filters, dates, pages with their next link, several ordering fields.
    studies_list = api("studies.studies_list")
    order = m.StudiesListOrderingItem
    page = studies_list.sync(
        client=client,
        patient=patient.id,
        status=m.StudiesListStatus.DONE,
        created_after=date.today(),
        ordering=[order("-created_at")],
        limit=2,
    )
    assert page.count == 3 and [s.id for s in page.results] == ids[::-1][:2]
    # `next` is a Python builtin too: the generated attribute is next_.
    rest = studies_list.sync(
        client=client,
        patient=patient.id,
        ordering=[order("-created_at")],
        limit=query_value(page.next_, "limit"),
        offset=query_value(page.next_, "offset"),
    )
    assert [s.id for s in rest.results] == [ids[0]] and rest.next_ is None

    def ordered(*fields: str) -> list[int]:
        results = studies_list.sync(client=client, patient=patient.id, ordering=[order(f) for f in fields]).results
        return [s.id for s in results if s.id in ids[:2]]

    # The client repeats the parameter (ordering=a&ordering=b): the first field sorts first...
    assert ordered("-created_at", "id") == ids[1::-1]
    # ...and where it ties (the two studies of the same film), the second decides.
    assert Study.objects.get(pk=ids[0]).latest_probability == Study.objects.get(pk=ids[1]).latest_probability
    assert ordered("-probability", "id") == ids[:2]
    assert ordered("-probability", "-id") == ids[1::-1]

    refused = studies_list.sync_detailed(client=client, limit=0)
    assert refused.status_code == 400
    assert refused.parsed.error.fields.additional_properties == {"limit": ["Must be from 1 to 200; 0 is not."]}

    predictions = api("predictions.predictions_list").sync(client=client, study=ids[0])
    assert [p.id for p in predictions.results] == [prediction.id]
    feedback = api("predictions.predictions_feedback_create").sync(
        client=client, prediction_id=prediction.id, body=m.FeedbackCreateRequest(agrees=True, comment="Concurs")
    )
    assert feedback.comment == "Concurs"
