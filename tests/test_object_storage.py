"""Films, derivatives, heatmaps and model artifacts on a real S3 server (rclone serve s3), and an inference
worker that shares no file system with the web process (issue 34, items 1-3)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage, storages
from django.db import transaction
from django.test import Client
from django.urls import reverse

from diagnostics.models import Image, Prediction, Study
from diagnostics.services.model_artifacts import COMPLETE_MARK, model_artifact_check, model_artifact_local_dir
from diagnostics.services.model_registry import model_version_activate, model_version_register
from diagnostics.services.storage_sweep import media_sweep_orphans
from diagnostics.services.studies import study_accept

from .conftest import api_client_for, copy_model_artifact, jpeg_upload, login_client
from .images import jpeg_bytes
from .worker import running_worker, wait_for_study

pytestmark = pytest.mark.django_db


def test_an_accepted_study_is_stored_in_the_bucket_and_read_back(s3_storage, owner, patient, media_root):
    server, bucket = s3_storage
    study = study_accept(user=owner, patient=patient, files=[("chest.jpeg", jpeg_bytes(seed=3))], fields={}).study
    image = study.images.get()
    keys = server.keys(bucket)
    assert f"media/{image.file.name}" in keys and f"media/{image.preview.name}" in keys
    with image.file.open("rb") as handle:
        assert handle.read() == jpeg_bytes(seed=3)
    # Nothing on the web host's disk, and no URL to the object.
    assert list(Path(media_root).rglob("*")) == []
    with pytest.raises(ValueError, match="not accessible via a URL"):
        image.file.url  # noqa: B018
    # The access-checked view streams it.
    response = login_client(owner).get(reverse("image_preview", args=[image.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "image/png"


def test_files_of_rows_that_roll_back_leave_the_bucket(s3_storage, owner, patient):
    server, bucket = s3_storage
    with pytest.raises(RuntimeError), transaction.atomic():
        study_accept(user=owner, patient=patient, files=[("chest.jpeg", jpeg_bytes(seed=4))], fields={})
        assert server.keys(bucket, "media/studies/")
        raise RuntimeError("the request fails after the files were written")
    import gc

    gc.collect()
    assert server.keys(bucket, "media/") == [] and not Image.objects.exists()


def test_the_orphan_sweep_lists_the_bucket(s3_storage, owner, patient):
    server, bucket = s3_storage
    study = study_accept(user=owner, patient=patient, files=[("chest.jpeg", jpeg_bytes(seed=5))], fields={}).study
    orphan = default_storage.save("studies/orphan-from-a-killed-upload", ContentFile(b"film"))
    kept = set(server.keys(bucket, "media/"))
    assert media_sweep_orphans(grace_seconds=3600) == {"checked": 0, "removed": 0}  # too young
    counts = media_sweep_orphans(grace_seconds=-60)
    assert counts["removed"] == 1 and counts["checked"] >= 3
    assert set(server.keys(bucket, "media/")) == kept - {f"media/{orphan}"}
    assert study.images.get().file.name.startswith("studies/")


def test_a_model_is_published_by_sha256_and_fetched_into_the_cache(s3_storage, tmp_path, settings):
    server, bucket = s3_storage
    folder = copy_model_artifact(settings.DEFAULT_MODEL_DIR, tmp_path / "artifact", version_suffix="s3")
    model_version = model_version_register(artifact_dir=folder)
    shutil.rmtree(folder)  # the registering host's folder is gone: only the bucket has the model
    published = server.keys(bucket, f"models/{model_version.sha256}/")
    assert f"models/{model_version.sha256}/model.onnx" in published
    assert f"models/{model_version.sha256}/manifest.json" in published
    assert model_artifact_check(model_version=model_version)
    local = model_artifact_local_dir(model_version)
    assert local == Path(settings.MODEL_CACHE_DIR) / model_version.sha256 and (local / COMPLETE_MARK).is_file()
    assert (local / "model.onnx").read_bytes() == (Path(settings.DEFAULT_MODEL_DIR) / "model.onnx").read_bytes()
    # A model whose stored file was replaced is refused, not served.
    shutil.rmtree(local)
    storage = storages["models"]
    storage.delete(f"{model_version.sha256}/model.onnx")
    storage.save(f"{model_version.sha256}/model.onnx", ContentFile(b"another model"))
    from ml.serving.inference import ModelArtifactError

    with pytest.raises(ModelArtifactError, match="do not match its sha256"):
        model_artifact_local_dir(model_version)
    assert not local.exists() and [p.name for p in local.parent.iterdir()] == []


def test_readyz_checks_the_bucket_and_the_stored_model(s3_storage, tmp_path, settings):
    server, bucket = s3_storage
    folder = copy_model_artifact(settings.DEFAULT_MODEL_DIR, tmp_path / "artifact", version_suffix="s3r")
    model_version_activate(model_version=model_version_register(artifact_dir=folder))
    from diagnostics.selectors import health

    health._model_cache.update(at=float("-inf"), key=None, ok=False)
    response = Client().get("/readyz")
    assert response.status_code == 200, response.content
    assert server.endpoint.split("//")[1] not in response.content.decode()
    default = settings.STORAGES["default"]
    for wrong in ({"bucket_name": "no-such-bucket"}, {"secret_key": "not-the-secret-key"}):
        settings.STORAGES = {**settings.STORAGES, "default": {**default, "OPTIONS": {**default["OPTIONS"], **wrong}}}
        response = Client().get("/readyz")
        assert response.status_code == 503 and response.json()["checks"]["storage"]["ok"] is False, wrong
        assert "no-such-bucket" not in response.content.decode()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_worker_sharing_no_file_system_assesses_an_upload_through_the_bucket(
    s3_storage, owner, patient, tmp_path, settings, media_root
):
    """Upload -> S3 -> assessed by a worker with its own working directory, empty media folder and model
    cache -> heatmap and result back -> page and API; the registered model folder no longer exists."""
    server, bucket = s3_storage
    folder = copy_model_artifact(settings.DEFAULT_MODEL_DIR, tmp_path / "artifact", version_suffix="remote")
    model_version = model_version_activate(model_version=model_version_register(artifact_dir=folder))
    shutil.rmtree(folder)
    worker_home = tmp_path / "gpu-host"
    (worker_home / "media").mkdir(parents=True)
    worker_env = {
        "MEDIA_ROOT": str(worker_home / "media"),
        "PORTAL_VAR_DIR": str(worker_home / "var"),
        "MODEL_CACHE_DIR": str(worker_home / "model-cache"),
    }
    with running_worker(extra_env=worker_env, cwd=worker_home) as worker:
        started = time.monotonic()
        response = api_client_for(owner).post(
            reverse("api_study_list"), {"patient_id": patient.pk, "images": [jpeg_upload()]}, format="multipart"
        )
        assert response.status_code == 202, response.content
        study = wait_for_study(response.json()["id"], worker)
        elapsed = time.monotonic() - started
    assert study.status == Study.Status.DONE, f"{study.failure_reason}\n{worker.log_tail()}"
    prediction = Prediction.objects.get(image__study=study)
    assert prediction.model_version == model_version and prediction.heatmap
    keys = server.keys(bucket)
    image = study.images.get()
    assert {f"media/{image.file.name}", f"media/{prediction.heatmap.name}"} <= set(keys)
    # Neither host wrote a film or a heatmap to its disk; the worker fetched the model by sha256.
    assert list(Path(media_root).rglob("*")) == [] and list((worker_home / "media").rglob("*")) == []
    assert (worker_home / "model-cache" / model_version.sha256 / COMPLETE_MARK).is_file()
    assert not Path(settings.MODEL_CACHE_DIR).exists()  # the web process never needed the model's files
    # The result reaches the page and the API, the heatmap through its access-checked view.
    page = login_client(owner).get(reverse("study_detail", args=[study.pk])).content.decode()
    assert model_version.name in page and Prediction.Label(prediction.label).label in page
    assert reverse("heatmap_image", args=[prediction.pk]) in page
    detail = api_client_for(owner).get(reverse("api_study_detail", args=[study.pk])).json()
    assert detail["status"] == "done"
    assert detail["images"][0]["predictions"][0]["probability"] == pytest.approx(prediction.probability)
    heatmap = login_client(owner).get(reverse("heatmap_image", args=[prediction.pk]))
    stored = server.client().get_object(Bucket=bucket, Key=f"media/{prediction.heatmap.name}")["Body"].read()
    assert heatmap.status_code == 200 and b"".join(heatmap.streaming_content) == stored
    print(f"\nupload -> result through S3 with a separate worker: {elapsed:.2f} s")
