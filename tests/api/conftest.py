"""Fixtures for the REST API tests: the five kinds of caller, a study with shown and shadow predictions."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.core.handlers.wsgi import WSGIHandler
from django.test.testcases import LiveServerThread
from rest_framework.test import APIClient

from diagnostics.models import ApiToken, CareTeam, ModelVersion, Patient, Prediction, Study, TrainingRun, User
from diagnostics.services.api_tokens import api_token_issue
from diagnostics.services.images import image_validate_upload
from diagnostics.services.studies import study_create, study_refresh_latest_result
from tests.factories import PatientFactory, UserFactory
from tests.images import chest_like_pixels, jpeg_bytes


@pytest.fixture
def admin_user(db) -> User:
    """An administrator who belongs to no care team: admin powers, no clinical data."""
    return UserFactory(username="root", role=User.Role.ADMIN, team=None, is_staff=True)


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


def make_model_version(
    name: str, status: str = ModelVersion.Status.CANDIDATE, *, threshold: float = 0.5, **extra: object
) -> ModelVersion:
    return ModelVersion.objects.create(
        name=name,
        architecture="cnn",
        artifact_path=f"/nonexistent/{name}",
        sha256="0" * 64,
        preprocessing_version="gray-squash-v1",
        threshold=threshold,
        status=status,
        **extra,
    )


def make_prediction(image, model_version: ModelVersion, *, probability: float, role: str = "primary") -> Prediction:
    """What the inference worker stores, with a chosen probability (the worker itself is tested end to end)."""
    prediction = Prediction.objects.create(
        image=image,
        model_version=model_version,
        role=role,
        probability=probability,
        threshold=model_version.threshold,
        label=Prediction.Label.PNEUMONIA if probability >= model_version.threshold else Prediction.Label.NORMAL,
        latency_ms=12.0,
        model_sha256=model_version.sha256,
        preprocessing_version=model_version.preprocessing_version,
        input_sha256="1" * 64,
    )
    study_refresh_latest_result(study=image.study)
    return prediction


def make_study(user: User, patient: Patient, *, seed: int = 0, accession_number: str = "ACC-1") -> Study:
    upload = image_validate_upload(filename="chest.jpeg", data=jpeg_bytes(seed=seed))
    return study_create(user=user, patient=patient, uploads=[upload], accession_number=accession_number)


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
    previous = make_model_version("cnn@0.9", ModelVersion.Status.ARCHIVED, activated_at="2024-01-01T00:00:00Z")
    active = make_model_version("cnn@1.0", ModelVersion.Status.ACTIVE, activated_at="2024-06-01T00:00:00Z")
    candidate = make_model_version("cnn@1.1")
    shadow = make_model_version("cnn@1.2-shadow", ModelVersion.Status.SHADOW)
    study = make_study(owner, patient)
    Study.objects.filter(pk=study.pk).update(status=Study.Status.DONE)
    study.refresh_from_db()
    image = study.images.get()
    prediction = make_prediction(image, active, probability=0.83)
    shadow_prediction = make_prediction(image, shadow, probability=0.11, role=Prediction.Role.SHADOW)
    run = TrainingRun.objects.create(architecture="cnn", config={"epochs": 1}, requested_by=admin_user)
    return Clinical(patient, study, prediction, shadow_prediction, active, previous, candidate, shadow, run)


@pytest.fixture
def other_patient(other_team, outsider) -> Patient:
    return PatientFactory(team=other_team, created_by=outsider, name="Zed Other", medical_record_number="MRN-B-1")


def dicom_bytes(*, modality: str = "DX", view_position: str = "AP", size: int = 128) -> bytes:
    """A minimal DICOM Part 10 chest film (explicit VR little endian, 16-bit)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = "MRN-A-1"
    ds.Modality = modality
    ds.ViewPosition = view_position
    ds.BodyPartExamined = "CHEST"
    pixels = chest_like_pixels(size).astype(np.uint16) * 16
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


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
