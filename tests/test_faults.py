"""Faults against the real PostgreSQL (issue 31, item 5): files of rolled-back transactions, attempts
counted per study and only for work that started, the claim honouring STUDY_MAX_ATTEMPTS, and a page
answering 503 with Retry-After when its database connection is cut."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import InterfaceError, OperationalError, connection, transaction

from diagnostics.models import Image, Prediction, Study
from diagnostics.services import heatmaps as heatmap_service
from diagnostics.services import inference
from diagnostics.services import studies as study_service
from diagnostics.services.images import image_validate_upload
from diagnostics.services.stored_files import file_remove_on_rollback
from diagnostics.services.studies import study_create

from .chaos import cut_this_connection
from .conftest import login_client
from .images import jpeg_bytes

pytestmark = pytest.mark.django_db(transaction=True)


def media_files(folder: str = "") -> set[str]:
    root = Path(settings.MEDIA_ROOT)
    return {str(p.relative_to(root)) for p in (root / folder).rglob("*") if p.is_file()}


def referenced_files() -> set[str]:
    names = set()
    for image in Image.objects.all():
        names |= {image.file.name, image.preview.name, image.window_source.name}
    names |= set(Prediction.objects.exclude(heatmap="").values_list("heatmap", flat=True))
    return {name for name in names if name}


def make_study(owner, patient, seed: int = 0) -> Study:
    upload = image_validate_upload(filename=f"{seed}.jpeg", data=jpeg_bytes(seed=seed))
    return study_create(user=owner, patient=patient, uploads=[upload])


def test_a_file_goes_with_the_savepoint_or_transaction_that_rolls_back_and_stays_with_a_commit():
    def write(label: str) -> str:
        name = default_storage.save(f"studies/{label}", ContentFile(b"film"))
        file_remove_on_rollback(storage=default_storage, name=name)
        return name

    with transaction.atomic():
        kept = write("kept")
        with pytest.raises(RuntimeError), transaction.atomic():  # a savepoint inside a transaction that commits
            in_savepoint = write("savepoint")
            raise RuntimeError
        assert not default_storage.exists(in_savepoint)  # at once, not when the outer transaction ends
        assert default_storage.exists(kept)
    assert default_storage.exists(kept)

    with pytest.raises(RuntimeError), transaction.atomic():
        rolled_back = write("rolled-back")
        raise RuntimeError
    assert not default_storage.exists(rolled_back)
    outside = default_storage.save("studies/autocommit", ContentFile(b"film"))
    file_remove_on_rollback(storage=default_storage, name=outside)  # no transaction: nothing to roll back
    assert default_storage.exists(outside)


def test_an_upload_whose_connection_is_cut_inside_an_outer_transaction_leaves_no_file(owner, patient):
    """The DICOM receiver files a study inside its own transaction: study_create's savepoint is
    released, then the connection is cut before the outer commit. Its films and derivatives go."""
    before = media_files()
    with pytest.raises((OperationalError, InterfaceError)), transaction.atomic():
        study = make_study(owner, patient)
        image = study.images.get()
        written = {image.file.name, image.preview.name}
        assert all(default_storage.exists(name) for name in written)
        cut_this_connection()
        Study.objects.count()
    connection.close()
    assert not Study.objects.exists()
    assert media_files() == before, "files of the rolled-back study survived"


def test_a_cut_connection_in_a_batch_spends_no_attempt_and_leaves_no_heatmap(owner, patient, active_model, monkeypatch):
    """Five studies claimed as one batch; the connection is cut right after the first heatmap is
    written. The prediction rolls back with its heatmap file, and every study goes back to the queue
    with its attempt given back. The next run finishes them all, one attempt each."""
    studies = [make_study(owner, patient, seed) for seed in range(5)]
    real_store = heatmap_service.prediction_store_heatmap
    cuts = []

    def store_then_cut(**kwargs):
        state = real_store(**kwargs)
        if not cuts:
            cuts.append(kwargs["prediction"].heatmap.name)
            cut_this_connection()
        return state

    monkeypatch.setattr(inference, "prediction_store_heatmap", store_then_cut)
    monkeypatch.setattr(inference, "RELEASE_BACKOFF_SECONDS", (0.0, 0.1))
    with pytest.raises((OperationalError, InterfaceError)):
        inference.study_run_inference(study_id=studies[0].pk)
    assert cuts and cuts[0] and not default_storage.exists(cuts[0]), "the rolled-back heatmap survived"
    assert set(Study.objects.values_list("status", "attempts")) == {(Study.Status.QUEUED, 0)}
    assert not Prediction.objects.exists()

    inference.study_run_inference(study_id=studies[0].pk)
    assert set(Study.objects.values_list("status", "attempts")) == {(Study.Status.DONE, 1)}
    assert media_files() == referenced_files() | media_files("inbox")


def test_the_claim_honours_max_attempts_exactly(owner, patient, active_model):
    spent, fresh = make_study(owner, patient, 0), make_study(owner, patient, 1)
    Study.objects.filter(pk=spent.pk).update(attempts=settings.STUDY_MAX_ATTEMPTS)
    assert inference.studies_claim_waiting(limit=15, exclude=0) == [Study.objects.get(pk=fresh.pk)]
    Study.objects.filter(pk=fresh.pk).update(status=Study.Status.QUEUED, attempts=settings.STUDY_MAX_ATTEMPTS - 1)

    assert inference.study_claim_for_inference(study_id=spent.pk) is None
    spent.refresh_from_db()
    assert spent.status == Study.Status.FAILED and spent.attempts == settings.STUDY_MAX_ATTEMPTS
    assert f"after {settings.STUDY_MAX_ATTEMPTS} attempts" in spent.failure_reason
    claimed = inference.study_claim_for_inference(study_id=fresh.pk)
    assert claimed is not None and claimed.attempts == settings.STUDY_MAX_ATTEMPTS  # the last one, not one more


def test_a_claim_cut_halfway_spends_no_attempt(owner, patient, monkeypatch):
    studies = [make_study(owner, patient, seed) for seed in range(4)]
    real_audit = inference.audit_record
    calls = []

    def audit_then_cut(**kwargs):
        calls.append(kwargs)
        if len(calls) == 2:  # the batch's rows are updated, its audit rows half written
            cut_this_connection()
        return real_audit(**kwargs)

    monkeypatch.setattr(inference, "audit_record", audit_then_cut)
    with pytest.raises((OperationalError, InterfaceError)):
        inference.studies_claim_waiting(limit=15, exclude=0)
    connection.close()
    assert set(Study.objects.filter(pk__in=[s.pk for s in studies]).values_list("status", "attempts")) == {
        (Study.Status.QUEUED, 0)
    }


def test_a_page_whose_database_connection_is_cut_answers_503_with_retry_after(owner):
    client = login_client(owner)
    client.raise_request_exception = False  # the answer is what a browser gets, not the exception
    assert client.get("/").status_code == 200
    cut_this_connection()
    response = client.get("/")
    assert response.status_code == 503, response.content[:300]
    assert response["Retry-After"] == "5"
    connection.close()  # what Django does after a request with a broken connection (the test client does not)
    assert client.get("/").status_code == 200


def test_an_upload_page_cut_mid_request_answers_503_and_leaves_no_file(owner, patient, monkeypatch):
    client = login_client(owner)
    client.raise_request_exception = False  # the answer is what a browser gets, not the exception
    before = media_files()
    real_store = study_service.image_store

    def store_then_cut(**kwargs):
        image = real_store(**kwargs)
        cut_this_connection()
        return image

    monkeypatch.setattr(study_service, "image_store", store_then_cut)
    response = client.post(
        f"/patients/{patient.pk}/studies/new/",
        {"modality": "CR", "images": [ContentFile(jpeg_bytes(seed=3), name="chest.jpeg")]},
    )
    assert response.status_code == 503, response.content[:300]
    assert response["Retry-After"] == "5"
    connection.close()
    assert not Study.objects.exists()
    assert media_files() == before
