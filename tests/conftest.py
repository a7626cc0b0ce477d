"""Shared fixtures: the three standing users, images, the active model and a real Celery worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from diagnostics.models import ModelVersion, User
from diagnostics.services.model_registry import model_version_activate, model_version_register

from .factories import CareTeamFactory, PatientFactory, UserFactory
from .images import jpeg_bytes
from .worker import CeleryWorker


@pytest.fixture
def team(db):
    return CareTeamFactory(name="Paediatrics A")


@pytest.fixture
def other_team(db):
    return CareTeamFactory(name="Paediatrics B")


@pytest.fixture
def owner(team) -> User:
    """The clinician who registers the patient."""
    return UserFactory(username="alice", team=team)


@pytest.fixture
def member(team) -> User:
    """Another clinician of the same care team."""
    return UserFactory(username="bob", team=team)


@pytest.fixture
def outsider(other_team) -> User:
    """A clinician of another care team: must never see the team's patients."""
    return UserFactory(username="charlie", team=other_team)


@pytest.fixture
def patient(team, owner):
    return PatientFactory(team=team, created_by=owner, name="Ada Lovelace", medical_record_number="MRN-A-1")


def login_client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def api_client_for(user: User) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def jpeg_upload(name: str = "chest.jpeg", seed: int = 0) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, jpeg_bytes(seed=seed), content_type="image/jpeg")


@pytest.fixture
def default_model_dir() -> Path:
    model_dir = Path(settings.DEFAULT_MODEL_DIR)
    assert (model_dir / "manifest.json").is_file(), f"the bundled model is missing from {model_dir}"
    return model_dir


@pytest.fixture
def active_model(db, default_model_dir) -> ModelVersion:
    """The model bundled with the repository, registered and active."""
    return model_version_activate(model_version=model_version_register(artifact_dir=default_model_dir))


@pytest.fixture
def celery_worker(django_db_setup, django_db_blocker) -> Iterator[CeleryWorker]:
    """A real `celery worker` process on the test database and the test Redis database.

    Function-scoped so that a test can kill it; it is torn down before the test
    database is dropped, because it depends on django_db_setup.
    """
    worker = CeleryWorker(database_name=settings.DATABASES["default"]["NAME"])
    worker.purge_queues()
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


def copy_model_artifact(source: Path, destination: Path, *, version_suffix: str) -> Path:
    """A second registrable artifact: the same model bytes under another version name."""
    import json
    import shutil

    shutil.copytree(source, destination)
    manifest_path = destination / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["version"] = f"{manifest['version']}-{version_suffix}"
    manifest_path.write_text(json.dumps(manifest))
    return destination
