"""Fixtures for the REST API tests: the five kinds of caller, a study with shown and shadow predictions."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.core.handlers.wsgi import WSGIHandler
from django.test.testcases import LiveServerThread
from rest_framework.test import APIClient

from diagnostics.models import ApiToken, CareTeam, ModelVersion, Patient, Prediction, Study, TrainingRun, User
from diagnostics.services.api_tokens import api_token_issue

from ..factories import (
    AdminFactory,
    ModelVersionFactory,
    PatientFactory,
    PredictionFactory,
    StudyFactory,
    TrainingRunFactory,
)


@pytest.fixture
def admin_user(db) -> User:
    """An administrator who belongs to no care team: admin powers, no clinical data."""
    return AdminFactory(username="root")


@dataclass
class IssuedClient:
    token: ApiToken
    key: str
    client: APIClient


def token_client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def issue_client(*, admin: User, team: CareTeam, name: str = "RIS bridge") -> IssuedClient:
    issued = api_token_issue(actor=admin, name=name, team=team)
    return IssuedClient(token=issued.token, key=issued.key, client=token_client(issued.key))


@pytest.fixture
def machine(admin_user, team) -> IssuedClient:
    """An API client of the team, with a token issued by the admin through the service."""
    return issue_client(admin=admin_user, team=team)


@dataclass
class Clinical:
    """The team's records the matrix asks about, with a shadow prediction that must never show."""

    patient: Patient
    study: Study
    prediction: Prediction
    shadow_prediction: Prediction
    active: ModelVersion
    previous: ModelVersion  # archived, once active: rollback target
    candidate: ModelVersion
    shadow: ModelVersion
    training_run: TrainingRun  # queued


@pytest.fixture
def clinical(owner, patient, admin_user) -> Clinical:
    previous = ModelVersionFactory(
        name="cnn@0.9", status=ModelVersion.Status.ARCHIVED, activated_at="2024-01-01T00:00:00Z"
    )
    active = ModelVersionFactory(name="cnn@1.0", status=ModelVersion.Status.ACTIVE, activated_at="2024-06-01T00:00:00Z")
    candidate = ModelVersionFactory(name="cnn@1.1")
    shadow = ModelVersionFactory(name="cnn@1.2-shadow", status=ModelVersion.Status.SHADOW)
    study = StudyFactory(created_by=owner, patient=patient)
    Study.objects.filter(pk=study.pk).update(status=Study.Status.DONE)
    study.refresh_from_db()
    image = study.images.get()
    prediction = PredictionFactory(image=image, model_version=active, probability=0.83)
    shadow_prediction = PredictionFactory(
        image=image, model_version=shadow, probability=0.11, role=Prediction.Role.SHADOW
    )
    run = TrainingRunFactory(requested_by=admin_user)
    return Clinical(patient, study, prediction, shadow_prediction, active, previous, candidate, shadow, run)


@pytest.fixture
def other_patient(other_team, outsider) -> Patient:
    return PatientFactory(team=other_team, created_by=outsider, name="Zed Other", medical_record_number="MRN-B-1")


@pytest.fixture
def portal_server(transactional_db) -> Iterator[str]:
    """The portal served over HTTP on 127.0.0.1 (a free port) for the test; yields its base URL.

    Like pytest-django's live_server, without Django's media-file handler: media is
    never served by URL here (MEDIA_URL is None), and that handler cannot run without one.
    """
    thread = LiveServerThread("127.0.0.1", static_handler=lambda _media_handler: StaticFilesHandler(WSGIHandler()))
    thread.daemon = True
    thread.start()
    thread.is_ready.wait()
    if thread.error:
        raise thread.error
    try:
        yield f"http://127.0.0.1:{thread.port}"
    finally:
        thread.terminate()
