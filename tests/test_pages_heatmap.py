"""Grad-CAM heatmaps: the explanation itself, its storage, access, the page and the queue it runs on."""

from __future__ import annotations

import datetime
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import redis
from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from PIL import Image as PILImage

from diagnostics.models import AuditEvent, Study
from diagnostics.selectors.heatmaps import prediction_heatmap_state
from diagnostics.services import heatmaps
from diagnostics.services.heatmaps import prediction_compute_heatmap
from diagnostics.services.model_registry import model_version_activate, model_version_register
from diagnostics.services.studies import study_queue_follow_ups
from ml.artifacts import sha256_file

from .conftest import HTMX, login_client
from .factories import PredictionFactory, StudyFactory

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def fresh_explainer(monkeypatch):
    """Each test loads its own model: the process-wide cache must not leak between tests."""
    monkeypatch.setattr(heatmaps, "_explainer", None)


def bright_square_model_artifact(folder: Path, *, size: int = 32) -> Path:
    """A Keras model whose evidence for pneumonia is brightness, so Grad-CAM must point at bright pixels."""
    import keras

    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0, name="normalize")(inputs)
    conv = keras.layers.Conv2D(1, 1, use_bias=False, name="conv", kernel_initializer=keras.initializers.Constant(1 / 3))
    x = conv(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(
        1,
        activation="sigmoid",
        name="pneumonia",
        kernel_initializer=keras.initializers.Constant(8.0),
        bias_initializer=keras.initializers.Constant(-2.0),
    )(x)
    folder.mkdir(parents=True)
    keras.Model(inputs, outputs).save(folder / "model.keras")
    manifest = {
        "name": "bright",
        "version": "1",
        "architecture": "cnn",
        "input_size": size,
        "preprocessing_version": "gray-squash-v1",
        "class_names": ["NORMAL", "PNEUMONIA"],
        "threshold": 0.5,
        "metrics": {},
        "files": {"keras": "model.keras"},
        "onnx_sha256": "unused",
        "keras_sha256": sha256_file(folder / "model.keras"),
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_grad_cam_points_at_the_region_that_raises_the_estimate(tmp_path):
    from ml.explain import GradCamExplainer, heatmap_png

    explainer = GradCamExplainer.from_artifact(bright_square_model_artifact(tmp_path / "bright"))
    film = np.full((128, 128), 20, dtype=np.uint8)
    film[8:40, 80:120] = 250  # top right
    result = explainer.explain_bytes(png(film))
    assert result.cam.shape == (32, 32) and result.cam.max() == pytest.approx(1.0)
    row, col = np.unravel_index(np.argmax(result.cam), result.cam.shape)
    assert row < 10 and col >= 20
    assert result.cam[2:10, 20:30].mean() > 0.8 > 0.2 > result.cam[20:, :16].mean()
    picture = PILImage.open(io.BytesIO(heatmap_png(result.cam, width=200, height=100)))
    assert picture.size == (200, 100) and picture.mode == "RGBA"


def test_grad_cam_refuses_a_keras_file_that_does_not_match_its_manifest(tmp_path):
    from ml.explain import ExplainerUnavailable, GradCamExplainer

    folder = bright_square_model_artifact(tmp_path / "bright")
    with (folder / "model.keras").open("ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ExplainerUnavailable, match="does not match its manifest"):
        GradCamExplainer.from_artifact(folder)


@pytest.mark.django_db
def test_heatmap_is_stored_served_to_the_team_only_and_shown_over_the_film(owner, outsider, patient, active_model):
    from ml.inference import Predictor

    study = StudyFactory(created_by=owner, patient=patient)
    image = study.images.get()
    probability = Predictor.from_artifact(active_model.artifact_path).predict_bytes(image.file.read())
    prediction = PredictionFactory(study=study, model_version=active_model, probability=probability, finish_study=True)
    state = prediction_compute_heatmap(prediction_id=prediction.pk)
    prediction.refresh_from_db()
    assert state.ready and prediction.heatmap.name.startswith("heatmaps/")
    stored = AuditEvent.objects.get(action="prediction.heatmap_stored", object_id=str(prediction.pk))
    assert stored.detail["model_version"] == active_model.name

    client = login_client(owner)
    response = client.get(reverse("heatmap_image", args=[prediction.pk]))
    heatmap = PILImage.open(io.BytesIO(b"".join(response.streaming_content)))
    assert response.status_code == 200 and heatmap.mode == "RGBA"
    assert heatmap.size == (512, 512)  # the 256x256 film's aspect ratio, longest side 512
    assert login_client(outsider).get(reverse("heatmap_image", args=[prediction.pk])).status_code == 404

    page = client.get(reverse("study_detail", args=[study.pk])).content.decode()
    assert f'src="/predictions/{prediction.pk}/heatmap.png"' in page
    assert "Heatmap opacity" in page and "data-heatmap-toggle" in page and "<kbd>H</kbd>" in page
    panel = client.get(reverse("heatmap_panel", args=[prediction.pk]), {"n": "1"}, **HTMX).content.decode()
    assert "The heatmap for image 1 is ready." in panel and 'hx-swap-oob="innerHTML"' in panel

    # Idempotent: a second run keeps the stored heatmap.
    assert prediction_compute_heatmap(prediction_id=prediction.pk).ready
    assert AuditEvent.objects.filter(action="prediction.heatmap_stored").count() == 1

    # The PDF report carries the film with and without the overlay.
    from pypdf import PdfReader

    report = PdfReader(io.BytesIO(client.get(reverse("study_report", args=[study.pk])).content))
    assert sum(len(page.images) for page in report.pages) == 2


@pytest.mark.django_db
def test_a_pending_heatmap_polls_with_no_content_until_it_is_ready(owner, patient, active_model):
    study = StudyFactory(created_by=owner, patient=patient)
    prediction = PredictionFactory(study=study, model_version=active_model, probability=0.5, finish_study=True)
    client = login_client(owner)
    assert prediction_heatmap_state(prediction=prediction).pending
    assert client.get(reverse("heatmap_panel", args=[prediction.pk]), **HTMX).status_code == 204
    assert client.get(reverse("heatmap_image", args=[prediction.pk])).status_code == 404
    assert "Computing the heatmap" in client.get(reverse("study_detail", args=[study.pk])).content.decode()


@pytest.mark.django_db
def test_an_artifact_without_a_keras_file_says_no_heatmap_is_available(owner, patient, default_model_dir, tmp_path):
    folder = tmp_path / "onnx-only"
    shutil.copytree(default_model_dir, folder)
    (folder / "model.keras").unlink()
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["files"]["keras"]
    manifest["version"] += "-onnx-only"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    model_version = model_version_activate(model_version=model_version_register(artifact_dir=folder))
    study = StudyFactory(created_by=owner, patient=patient)
    prediction = PredictionFactory(study=study, model_version=model_version, probability=0.7, finish_study=True)

    state = prediction_compute_heatmap(prediction_id=prediction.pk)
    prediction.refresh_from_db()
    assert state.status == "unavailable" and not prediction.heatmap
    assert "has no Keras file" in state.message
    client = login_client(owner)
    page = client.get(reverse("study_detail", args=[study.pk])).content.decode()
    assert "No heatmap is available: this model&#x27;s artifact has no Keras file" in page
    assert "heatmap.png" not in page
    panel = client.get(reverse("heatmap_panel", args=[prediction.pk]), {"n": "1"}, **HTMX)
    assert panel.status_code == 200 and "has no Keras file" in panel.content.decode()


@pytest.mark.django_db
def test_a_keras_model_that_disagrees_with_the_served_probability_gets_no_heatmap(owner, patient, active_model):
    study = StudyFactory(created_by=owner, patient=patient)
    prediction = PredictionFactory(
        study=study, model_version=active_model, probability=0.999, finish_study=True
    )  # not what this model says for the film
    state = prediction_compute_heatmap(prediction_id=prediction.pk)
    prediction.refresh_from_db()
    assert state.status == "unavailable" and "different probability" in state.message and not prediction.heatmap
    page = login_client(owner).get(reverse("study_detail", args=[study.pk])).content.decode()
    assert "different probability" in page


@pytest.mark.django_db(transaction=True)
def test_a_finished_study_sends_its_predictions_to_the_explain_queue(owner, patient, active_model):
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete("explain")
    done, failed = StudyFactory(created_by=owner, patient=patient), StudyFactory(created_by=owner, patient=patient)
    prediction = PredictionFactory(study=done, model_version=active_model, probability=0.4, finish_study=True)
    study_queue_follow_ups(study_id=failed.pk, status=Study.Status.FAILED)
    assert broker.llen("explain") == 0
    study_queue_follow_ups(study_id=done.pk, status=Study.Status.DONE)
    [message] = broker.lrange("explain", 0, -1)
    body = json.loads(message)
    assert body["headers"]["task"] == "worker.tasks.compute_prediction_heatmap"
    assert body["headers"]["argsrepr"] == f"({prediction.pk},)"
    broker.delete("explain")


@pytest.mark.django_db
def test_without_a_task_queue_the_heatmap_is_recorded_as_unavailable_not_computed_in_the_web_process(
    owner, patient, active_model, settings
):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    study = StudyFactory(created_by=owner, patient=patient)
    prediction = PredictionFactory(study=study, model_version=active_model, probability=0.4, finish_study=True)
    study_queue_follow_ups(study_id=study.pk, status=Study.Status.DONE)
    state = prediction_heatmap_state(prediction=prediction)
    assert state.status == "unavailable" and "separate explain worker" in state.message


SERVING_IMPORTS = """
import sys, django
django.setup()
import portal.urls, worker.tasks, diagnostics.services.heatmaps, diagnostics.services.reports
from django.test import Client
Client().get("/")
heavy = sorted(name for name in ("tensorflow", "keras") if name in sys.modules)
print("heavy:", heavy)
"""


def test_the_web_app_and_the_task_modules_never_import_tensorflow():
    env = {"DJANGO_SETTINGS_MODULE": "portal.settings.test", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", SERVING_IMPORTS], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "heavy: []"


@pytest.mark.django_db
def test_a_heatmap_that_is_late_says_so_and_one_that_fails_says_why(owner, patient, active_model, monkeypatch):
    study = StudyFactory(created_by=owner, patient=patient)
    prediction = PredictionFactory(study=study, model_version=active_model, probability=0.5, finish_study=True)
    type(prediction).objects.filter(pk=prediction.pk).update(created_at=timezone.now() - datetime.timedelta(minutes=6))
    prediction.refresh_from_db()
    late = prediction_heatmap_state(prediction=prediction)
    assert late.pending and "taking longer than usual" in late.message
    assert (
        "taking longer than usual" in login_client(owner).get(reverse("study_detail", args=[study.pk])).content.decode()
    )

    def broken(data: bytes) -> None:
        raise MemoryError("out of memory")

    explainer = heatmaps.explainer_for(active_model)
    monkeypatch.setattr(explainer, "explain_bytes", broken)
    state = prediction_compute_heatmap(prediction_id=prediction.pk)
    assert state.status == "unavailable" and "could not be computed for this film (MemoryError)" in state.message
    assert prediction_heatmap_state(prediction=prediction).status == "unavailable"
