"""Heatmaps: the model's class activation map, stored with the prediction, its storage, access and the pages.

How the map gets into the ONNX graph is tested in tests/ml/test_export_cam.py.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import redis
from django.conf import settings
from django.urls import reverse
from PIL import Image as PILImage

from diagnostics.integrations.pacs_out.services import caption_lines
from diagnostics.models import AuditEvent, Prediction, Study
from diagnostics.selectors.heatmaps import NO_HEATMAP_ARCHITECTURE, prediction_heatmap_state
from diagnostics.services.heatmaps import CAM_MISMATCH, heatmap_size, prediction_store_heatmap
from diagnostics.services.inference import study_run_inference
from diagnostics.services.model_registry import model_version_activate, model_version_register
from diagnostics.services.studies import study_queue_follow_ups
from ml.serving.artifacts import heatmap_extent
from ml.serving.heatmap import heatmap_png, positive_evidence
from ml.serving.inference import Predictor
from ml.serving.preprocessing import load_for_model

from .conftest import copy_model_artifact, login_client
from .factories import PredictionFactory, StudyFactory
from .images import jpeg_bytes

ROOT = Path(__file__).resolve().parent.parent


def predicted_study(owner, patient, *, seed: int = 0) -> tuple[Study, Prediction]:  # noqa: ANN001
    """A study of one real film, predicted by the inference service as a worker (or the web process) does."""
    study = StudyFactory(created_by=owner, patient=patient, seed=seed)
    study_run_inference(study_id=study.pk)
    study.refresh_from_db()
    assert study.status == Study.Status.DONE, study.failure_reason
    prediction = Prediction.objects.get(image__study=study)
    assert prediction.analysable
    return study, prediction


def stored_rgba(prediction: Prediction) -> np.ndarray:
    with prediction.heatmap.open("rb") as handle:
        return np.asarray(PILImage.open(io.BytesIO(handle.read())).convert("RGBA"))


@pytest.mark.slow
@pytest.mark.django_db
def test_the_stored_heatmap_is_the_keras_models_class_activation_map_of_the_film(owner, patient, active_model):
    """Against a map computed independently, from the Keras model's own last feature map and its final Dense
    layer: a wrong map (other weights, no bias, transposed, flipped, another film's) fails here."""
    import keras

    from ml.training import export

    study, prediction = predicted_study(owner, patient, seed=2)
    predictor = Predictor.from_artifact(active_model.artifact_path)
    with prediction.image.file.open("rb") as handle:
        tensor = load_for_model(handle.read(), input_size=predictor.input_size)
    model = keras.saving.load_model(Path(active_model.artifact_path) / "model.keras", compile=False)
    head = export.cam_head(model)
    assert head is not None  # the bundled xception_mid: pooling straight into Dense(1)
    expected = export.keras_cam(model, head, tensor[None])[0]
    # xception_mid's last feature map: stride 16, 'same' padding; a pooling margin leaves its outer cells out.
    extent = heatmap_extent(predictor.manifest)
    full_side = -(-predictor.input_size // 16)
    margin = round(extent[0] * full_side)
    side = full_side - 2 * margin
    assert expected.shape == (side, side) == tuple(predictor.manifest["heatmap"]["shape"])
    assert list(head.extent) == list(extent)
    # The map explains the number shown: its mean is the logit of the stored probability.
    p = prediction.probability
    assert float(expected.mean()) == pytest.approx(np.log(p / (1 - p)), abs=1e-3)

    served = predictor.predict_with_cam(tensor[None]).cams
    assert served is not None and served.shape == (1, side, side)
    assert np.max(np.abs(served[0] - expected)) < 1e-3

    evidence = positive_evidence(expected)
    assert evidence.raw_max > 0  # this film has regions that point towards pneumonia
    stored = AuditEvent.objects.get(action="prediction.heatmap_stored", object_id=str(prediction.pk))
    assert stored.detail["raw_max"] == pytest.approx(evidence.raw_max, abs=1e-3) and not stored.detail["blank"]
    width, height = heatmap_size(width=prediction.image.width, height=prediction.image.height)
    rgba = stored_rgba(prediction)
    assert rgba.shape == (height, width, 4)
    drawn = heatmap_png(evidence.map, width=width, height=height, extent=extent)
    reference = np.asarray(PILImage.open(io.BytesIO(drawn)))
    assert np.abs(rgba.astype(int) - reference.astype(int)).max() <= 2

    def pixel(row: int, col: int) -> tuple[int, int]:
        """The film pixel at the centre of a map cell, the map lying over its extent of the film."""
        top, left, bottom, right = extent
        return (
            int((top + (row + 0.5) / side * (bottom - top)) * height),
            int((left + (col + 0.5) / side * (right - left)) * width),
        )

    # Where the map is strongest, the picture is opaque; where it is not positive, clear; outside the map, clear.
    assert rgba[(*pixel(*np.unravel_index(np.argmax(expected), expected.shape)), 3)] > 150
    row, col = np.unravel_index(np.argmin(expected), expected.shape)
    assert expected[row, col] < 0 and rgba[(*pixel(row, col), 3)] < 30
    if margin:
        outside = int(extent[0] * height) - 1
        assert rgba[:outside, :, 3].max() == 0 and rgba[-outside:, :, 3].max() == 0


@pytest.mark.django_db
def test_heatmap_is_stored_with_the_prediction_served_to_the_team_only_and_shown_over_the_film(
    owner, outsider, patient, active_model
):
    study, prediction = predicted_study(owner, patient)
    assert prediction.heatmap.name.startswith("heatmaps/")
    stored = AuditEvent.objects.get(action="prediction.heatmap_stored", object_id=str(prediction.pk))
    assert stored.detail["model_version"] == active_model.name
    # Stored in the same step as the prediction, nothing queued after it.
    assert not AuditEvent.objects.filter(action="prediction.heatmap_unavailable").exists()

    client = login_client(owner)
    response = client.get(reverse("heatmap_image", args=[prediction.pk]))
    heatmap = PILImage.open(io.BytesIO(b"".join(response.streaming_content)))
    assert response.status_code == 200 and heatmap.mode == "RGBA"
    assert heatmap.size == (256, 256)  # the 256x256 film's aspect ratio, longest side HEATMAP_MAX_SIDE
    assert login_client(outsider).get(reverse("heatmap_image", args=[prediction.pk])).status_code == 404

    page = client.get(reverse("study_detail", args=[study.pk])).content.decode()
    assert f'src="/predictions/{prediction.pk}/heatmap.png"' in page
    assert "Heatmap opacity" in page and "data-heatmap-toggle" in page and "<kbd>H</kbd>" in page
    assert "pointed the model towards pneumonia" in page and "Grad-CAM" not in page and "explain worker" not in page

    # Idempotent: a second store keeps the stored heatmap.
    cam = np.zeros((14, 14), dtype=np.float32)
    assert prediction_store_heatmap(prediction=prediction, cam=cam, team_id=patient.team_id).ready
    assert AuditEvent.objects.filter(action="prediction.heatmap_stored").count() == 1

    # The PDF report carries the film with and without the overlay, and says what the heatmap is.
    from pypdf import PdfReader

    report = PdfReader(io.BytesIO(client.get(reverse("study_report", args=[study.pk])).content))
    assert sum(len(page.images) for page in report.pages) == 2
    text = " ".join(" ".join(page.extract_text() for page in report.pages).split())
    assert "pointed the model towards pneumonia" in text and "Grad-CAM" not in text


@pytest.mark.django_db
def test_a_model_whose_architecture_gives_no_heatmap_says_so_everywhere(owner, patient, default_model_dir, tmp_path):
    folder = copy_model_artifact(default_model_dir, tmp_path / "no-cam", version_suffix="no-cam")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["heatmap"] = None  # as for a Flatten or hidden-Dense head (tests/ml/test_export_cam.py)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    model_version_activate(model_version=model_version_register(artifact_dir=folder))

    study, prediction = predicted_study(owner, patient)
    assert not prediction.heatmap
    state = prediction_heatmap_state(prediction=prediction)
    assert state.status == "unavailable" and state.message == NO_HEATMAP_ARCHITECTURE
    client = login_client(owner)
    page = client.get(reverse("study_detail", args=[study.pk])).content.decode()
    assert "This model&#x27;s architecture gives no heatmap." in page
    assert "heatmap.png" not in page and "Heatmap opacity" not in page
    assert client.get(reverse("heatmap_image", args=[prediction.pk])).status_code == 404
    assert caption_lines(prediction)[-1].endswith("; heatmap not available")  # the PACS capture says so too

    from pypdf import PdfReader

    report = PdfReader(io.BytesIO(client.get(reverse("study_report", args=[study.pk])).content))
    text = " ".join(" ".join(page.extract_text() for page in report.pages).split())
    assert NO_HEATMAP_ARCHITECTURE in text


@pytest.mark.django_db
def test_a_map_that_does_not_add_up_to_the_probability_shown_is_never_drawn(owner, patient, active_model):
    study = StudyFactory(created_by=owner, patient=patient)
    prediction = PredictionFactory(study=study, model_version=active_model, probability=0.9, finish_study=True)
    state = prediction_store_heatmap(prediction=prediction, cam=np.full((14, 14), -3.0), team_id=patient.team_id)
    prediction.refresh_from_db()
    assert state.status == "unavailable" and state.message == CAM_MISMATCH and not prediction.heatmap
    assert prediction_heatmap_state(prediction=prediction).message == CAM_MISMATCH
    page = login_client(owner).get(reverse("study_detail", args=[study.pk])).content.decode()
    assert "does not add up to the probability shown" in page and "heatmap.png" not in page


@pytest.mark.django_db
def test_a_map_without_positive_evidence_is_stored_blank_and_the_page_says_so(owner, patient, active_model):
    study = StudyFactory(created_by=owner, patient=patient)
    prediction = PredictionFactory(study=study, model_version=active_model, probability=0.1, finish_study=True)
    cam = np.full((14, 14), np.log(0.1 / 0.9), dtype=np.float32)  # every location points away from pneumonia
    state = prediction_store_heatmap(prediction=prediction, cam=cam, team_id=patient.team_id)
    assert state.ready and state.blank
    prediction.refresh_from_db()
    assert stored_rgba(prediction)[..., 3].max() == 0  # transparent: no made-up colour
    page = login_client(owner).get(reverse("study_detail", args=[study.pk])).content.decode()
    assert "No region of this film pointed the model towards pneumonia" in page


@pytest.mark.django_db(transaction=True)
def test_in_process_tasks_get_their_heatmaps_and_nothing_is_queued_after_the_study(
    owner, patient, active_model, monkeypatch
):
    """The embedded mode (no broker, tasks in process: `make run`) draws heatmaps like a worker does."""
    from worker.celery_app import app

    monkeypatch.setitem(app.conf, "task_always_eager", True)
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete("explain")
    study = StudyFactory(created_by=owner, patient=patient, films=[("chest.jpeg", jpeg_bytes(seed=3))])
    study.refresh_from_db()
    assert study.status == Study.Status.DONE, study.failure_reason
    prediction = Prediction.objects.get(image__study=study)
    assert prediction.heatmap and prediction_heatmap_state(prediction=prediction).ready
    study_queue_follow_ups(study_id=study.pk, status=Study.Status.DONE)
    assert broker.llen("explain") == 0  # no heatmap task for any worker


SERVING_IMPORTS = """
import sys, django
django.setup()
import portal.urls, diagnostics.tasks, diagnostics.services.heatmaps, diagnostics.services.inference
import diagnostics.services.reports, ml.serving.heatmap, ml.serving.inference
from django.test import Client
Client().get("/")
heavy = sorted(name for name in ("tensorflow", "keras") if name in sys.modules)
print("heavy:", heavy)
"""


@pytest.mark.slow
def test_the_web_app_and_the_task_modules_never_import_tensorflow():
    env = {"DJANGO_SETTINGS_MODULE": "portal.settings.test", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", SERVING_IMPORTS], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "heavy: []"
