"""Every prediction records where and in which form the model ran; only a checked variant serves."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from diagnostics.models import Prediction, Study
from diagnostics.services import inference
from diagnostics.services.inference import serving_variants_prepare, study_run_inference
from ml.serving import variants
from ml.serving.artifacts import sha256_file

from .factories import StudyFactory
from .images import jpeg_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def variant_cache(tmp_path, monkeypatch) -> Path:
    """An empty choice cache of the test's own, no serving mode set, and no model loaded yet."""
    cache = tmp_path / "variants"
    monkeypatch.setenv(variants.CACHE_DIR_ENV, str(cache))
    monkeypatch.delenv(variants.MODE_ENV, raising=False)
    monkeypatch.setattr(inference, "_predictors", {})
    return cache


def _predict(owner, patient) -> Prediction:
    study = StudyFactory(created_by=owner, patient=patient, films=[("img0", jpeg_bytes())])
    study_run_inference(study_id=study.pk)
    study.refresh_from_db()
    assert study.status == Study.Status.DONE, study.failure_reason
    return Prediction.objects.get(image__study=study)


def _cache_a_choice(cache: Path, model_dir: Path, tmp_path: Path) -> Path:
    """A cached record that chose 'int8' for this CPU: here the fp32 graph saved again (other bytes),
    standing in for a quantized file that passed its checks."""
    import onnx

    model = onnx.load(str(model_dir / "model.onnx"))
    model.doc_string = "stand-in for a checked variant"
    variant = tmp_path / "model.int8.onnx"
    onnx.save(model, str(variant))
    ident = variants.identity(sha256_file(model_dir / "model.onnx"))
    entry = {
        "identity": ident,
        "chosen": "int8",
        "reason": "passed in a test",
        "variants": [
            {"variant": "fp32", "path": str(model_dir / "model.onnx"), "sha256": ident["model_sha256"]},
            {"variant": "int8", "path": str(variant), "sha256": sha256_file(variant)},
        ],
    }
    path = variants.choice_path(cache, ident)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entry))
    return variant


def test_a_prediction_records_provider_device_and_variant(owner, patient, active_model):
    prediction = _predict(owner, patient)
    assert prediction.execution_provider == "CPUExecutionProvider"
    assert prediction.device.startswith("CPU: ")
    assert prediction.model_variant == "fp32"
    assert prediction.variant_sha256 == prediction.model_sha256 == active_model.sha256


def test_a_checked_variant_serves_and_is_recorded(owner, patient, active_model, variant_cache, tmp_path):
    variant = _cache_a_choice(variant_cache, Path(active_model.artifact_path), tmp_path)
    prediction = _predict(owner, patient)
    assert prediction.model_variant == "int8"
    assert prediction.variant_sha256 == sha256_file(variant) != prediction.model_sha256
    assert prediction.model_sha256 == active_model.sha256  # the model's identity stays the registered file


def test_a_variant_changed_after_its_check_is_not_served(owner, patient, active_model, variant_cache, tmp_path, caplog):
    variant = _cache_a_choice(variant_cache, Path(active_model.artifact_path), tmp_path)
    variant.write_bytes(variant.read_bytes() + b"\0")
    with caplog.at_level(logging.INFO, logger="diagnostics.services.inference"):
        prediction = _predict(owner, patient)
    assert prediction.model_variant == "fp32" and prediction.variant_sha256 == active_model.sha256
    assert "not the one that was checked" in caplog.text


def test_fp32_mode_ignores_any_cached_choice(owner, patient, active_model, variant_cache, tmp_path, monkeypatch):
    _cache_a_choice(variant_cache, Path(active_model.artifact_path), tmp_path)
    monkeypatch.setenv(variants.MODE_ENV, "fp32")
    assert _predict(owner, patient).model_variant == "fp32"


def test_worker_start_without_a_data_folder_serves_fp32_and_says_why(active_model, settings, caplog):
    settings.PNEUMONIA_DATA_DIR = ""
    with caplog.at_level(logging.INFO, logger="diagnostics.services.inference"):
        serving_variants_prepare()
    assert f"Model {active_model.name} will be served as fp32" in caplog.text
    assert "no data folder with external/ is configured" in caplog.text


def test_worker_start_reads_a_cached_choice_without_measuring(active_model, variant_cache, tmp_path, caplog):
    _cache_a_choice(variant_cache, Path(active_model.artifact_path), tmp_path)
    with caplog.at_level(logging.INFO, logger="diagnostics.services.inference"):
        serving_variants_prepare()
    assert f"Model {active_model.name} will be served as int8" in caplog.text


def test_the_model_page_shows_where_the_model_trained(team):
    from django.urls import reverse

    from .conftest import login_client
    from .factories import AdminFactory, ModelVersionFactory

    model_version = ModelVersionFactory(manifest={"trained_on": {"backend": "torch", "device": "GPU: NVIDIA H200"}})
    page = login_client(AdminFactory(team=team)).get(reverse("model_detail", args=[model_version.pk]))
    assert page.status_code == 200
    assert "<dt>Trained on</dt><dd>GPU: NVIDIA H200" in page.content.decode()
