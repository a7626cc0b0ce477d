"""The inference service: real model, one prediction per (image, model), clear failures."""

from __future__ import annotations

import pytest

from diagnostics.models import AuditEvent, ModelVersion, Prediction, Study
from diagnostics.services.inference import NO_ACTIVE_MODEL, study_run_inference
from diagnostics.services.model_registry import model_version_activate, model_version_register

from .factories import StudyFactory
from .images import jpeg_bytes, png_bytes

pytestmark = pytest.mark.django_db


def test_without_an_active_model_the_study_fails_with_a_clear_reason(owner, patient):
    study = StudyFactory(created_by=owner, patient=patient, films=[("img0", jpeg_bytes())])
    study_run_inference(study_id=study.pk)
    study.refresh_from_db()
    assert study.status == Study.Status.FAILED
    assert study.failure_reason == NO_ACTIVE_MODEL
    assert not Prediction.objects.exists()
    changes = AuditEvent.objects.filter(action="study.status_changed", object_id=str(study.pk)).order_by("pk")
    assert [(e.detail["from"], e.detail["to"]) for e in changes] == [("queued", "running"), ("running", "failed")]


def test_every_image_gets_one_prediction_with_its_provenance(owner, patient, active_model):
    first, second = jpeg_bytes(seed=1), png_bytes(seed=2)
    study = StudyFactory(created_by=owner, patient=patient, films=[("img0", first), ("img1", second)])
    study_run_inference(study_id=study.pk)
    study.refresh_from_db()
    assert study.status == Study.Status.DONE, study.failure_reason
    predictions = Prediction.objects.filter(image__study=study).select_related("image")
    assert predictions.count() == 2
    for prediction in predictions:
        assert 0.0 <= prediction.probability <= 1.0
        assert prediction.threshold == active_model.threshold
        expected = "PNEUMONIA" if prediction.probability >= prediction.threshold else "NORMAL"
        assert prediction.label == expected
        assert prediction.model_version == active_model
        assert prediction.model_sha256 == active_model.sha256
        assert prediction.preprocessing_version == active_model.preprocessing_version
        assert prediction.input_sha256 == prediction.image.sha256


def test_running_the_task_twice_stores_one_prediction(owner, patient, active_model):
    study = StudyFactory(created_by=owner, patient=patient, films=[("img0", jpeg_bytes())])
    study_run_inference(study_id=study.pk)
    study_run_inference(study_id=study.pk)  # a redelivered message: the study is no longer queued
    Study.objects.filter(pk=study.pk).update(status=Study.Status.QUEUED)  # even if re-queued by hand
    study_run_inference(study_id=study.pk)
    assert Prediction.objects.filter(image__study=study).count() == 1
    assert Study.objects.get(pk=study.pk).status == Study.Status.DONE


def test_a_tampered_model_file_fails_the_study_instead_of_predicting(owner, patient, default_model_dir, tmp_path):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(default_model_dir, copy)
    model_version = model_version_activate(model_version=model_version_register(artifact_dir=copy))
    (copy / "model.onnx").write_bytes(b"not a model any more")
    study = StudyFactory(created_by=owner, patient=patient, films=[("img0", jpeg_bytes())])
    study_run_inference(study_id=study.pk)
    study.refresh_from_db()
    assert study.status == Study.Status.FAILED
    assert model_version.name in study.failure_reason and "cannot be loaded" in study.failure_reason
    assert not Prediction.objects.exists()


def test_activating_a_model_archives_the_previous_one(default_model_dir, tmp_path):
    import json
    import shutil

    first = model_version_register(artifact_dir=default_model_dir)
    copy = tmp_path / "model"
    shutil.copytree(default_model_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["version"] = manifest["version"] + "-copy"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    second = model_version_register(artifact_dir=copy)
    model_version_activate(model_version=first)
    model_version_activate(model_version=second)
    assert list(ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE)) == [second]
    first.refresh_from_db()
    assert first.status == ModelVersion.Status.ARCHIVED


def test_waiting_studies_are_predicted_together_in_one_micro_batch(owner, patient, active_model):
    studies = [
        StudyFactory(created_by=owner, patient=patient, films=[("img0", jpeg_bytes(seed=seed))]) for seed in range(3)
    ]
    broken = StudyFactory(created_by=owner, patient=patient, films=[("img0", jpeg_bytes(seed=9))])
    with broken.images.get().file.open("wb") as handle:  # the stored file went bad after upload
        handle.write(b"\xff\xd8\xff" + b"\0" * 64)
    study_run_inference(study_id=studies[0].pk)
    for study in studies:
        study.refresh_from_db()
        assert study.status == Study.Status.DONE and study.attempts == 1
        assert Prediction.objects.filter(image__study=study).count() == 1
    broken.refresh_from_db()
    assert broken.status == Study.Status.FAILED and "could not be read" in broken.failure_reason
    for study in studies[1:]:
        study_run_inference(study_id=study.pk)  # their own messages arrive later: nothing to do
    assert Prediction.objects.count() == 3


def test_the_batch_size_bounds_how_many_studies_one_task_claims(owner, patient, active_model, settings):
    settings.INFERENCE_MAX_BATCH = 2
    studies = [
        StudyFactory(created_by=owner, patient=patient, films=[("img0", jpeg_bytes(seed=seed))]) for seed in range(3)
    ]
    study_run_inference(study_id=studies[0].pk)
    statuses = sorted(Study.objects.values_list("status", flat=True))
    assert statuses == ["done", "done", "queued"]
