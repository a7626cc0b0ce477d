"""Retraining: validation of an admin's choices, a real tiny run through the training worker, cancel."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django_celery_beat.models import PeriodicTask

from diagnostics.models import AuditEvent, Feedback, ModelVersion, TrainingRun
from diagnostics.services.feedback import feedback_record
from diagnostics.services.images import image_validate_upload
from diagnostics.services.inference import study_run_inference
from diagnostics.services.studies import study_create
from diagnostics.services.training import (
    feedback_training_records,
    training_run_cancel,
    training_run_execute,
    training_run_reconcile_stale,
    training_run_start,
)
from ml.training.config import ARCHITECTURE_NAMES

from .factories import TrainingRunFactory
from .images import jpeg_bytes
from .worker import CeleryWorker

QUICK = {"epochs": 2, "input_size": 32, "batch_size": 8}


@pytest.mark.slow  # imports TensorFlow (ml.training.architectures)
def test_the_portal_knows_every_architecture_ml_can_build():
    from ml.training.architectures import ARCHITECTURES

    assert set(ARCHITECTURE_NAMES) == set(ARCHITECTURES)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("architecture", "config", "message"),
    [
        ("alexnet", {}, "Unknown architecture"),
        ("cnn", {"epochs": 0}, "epochs must be between 1 and 200"),
        ("cnn", {"weights": "http://elsewhere"}, "Weights must be"),
        ("cnn", {"stages": "progressive", "weights": "imagenet"}, "Progressive fine-tuning needs"),
        ("vgg19", {"stages": "progressive"}, "Progressive fine-tuning needs"),
        ("cnn", {"data_source": "/etc"}, "Data source must be"),
    ],
)
def test_a_bad_training_request_is_refused_with_a_reason(dataset, architecture, config, message):
    with pytest.raises(ValidationError, match=message):
        training_run_start(actor=None, architecture=architecture, config=config)
    assert not TrainingRun.objects.exists()


@pytest.mark.django_db
def test_training_needs_a_configured_dataset(settings):
    settings.PNEUMONIA_DATA_DIR = ""
    with pytest.raises(ValidationError, match="No training dataset is configured"):
        training_run_start(actor=None, architecture="cnn", config={})


@pytest.mark.django_db
def test_scheduled_retraining_exists_and_is_off_by_default():
    task = PeriodicTask.objects.get(task="worker.tasks.scheduled_retraining")
    assert task.enabled is False and task.queue == "training"


@pytest.mark.slow  # training_run_execute imports the trainer: Keras and TensorFlow
@pytest.mark.django_db
def test_a_queued_run_is_cancelled_at_once(dataset, owner):
    run = training_run_start(actor=owner, architecture="cnn", config=QUICK)
    run = training_run_cancel(run=run, actor=owner)
    assert run.status == TrainingRun.Status.CANCELLED
    assert training_run_execute(run_id=run.pk) is None  # a late delivery does nothing
    with pytest.raises(ValidationError, match="already finished"):
        training_run_cancel(run=run, actor=owner)


@pytest.mark.slow
@pytest.mark.django_db
def test_a_running_run_stops_at_its_next_progress_report(dataset, owner):
    run = training_run_start(actor=owner, architecture="cnn", config={**QUICK, "epochs": 50})
    TrainingRun.objects.filter(pk=run.pk).update(cancel_requested=True)  # as if clicked just after it started
    run = training_run_execute(run_id=run.pk)
    assert run.status == TrainingRun.Status.CANCELLED
    assert "cancelled by an administrator" in run.error
    assert not ModelVersion.objects.exists()
    assert run.device in ("CPU",) or run.device.startswith("GPU")


@pytest.mark.django_db
def test_clinician_confirmed_labels_become_training_films(owner, patient, active_model, tmp_path):
    study = study_create(
        user=owner, patient=patient, uploads=[image_validate_upload(filename="a.jpeg", data=jpeg_bytes())]
    )
    study_run_inference(study_id=study.pk)
    prediction = study.images.get().predictions.get()
    other = "NORMAL" if prediction.label == "PNEUMONIA" else "PNEUMONIA"
    feedback_record(user=owner, prediction=prediction, agrees=True)
    feedback_record(user=owner, prediction=prediction, agrees=False, confirmed_label=other)  # the latest wins
    records, summary = feedback_training_records(destination=tmp_path / "fb")
    assert Feedback.objects.count() == 2
    assert summary["feedback_counts"][other] == 1 and summary["feedback_images"] == 1
    [record] = records
    assert record.path.parent.name == other and record.path.read_bytes() == jpeg_bytes()


@pytest.mark.django_db
def test_a_run_with_no_progress_for_too_long_is_failed(dataset):
    run = TrainingRunFactory(status=TrainingRun.Status.RUNNING, config={})
    TrainingRun.objects.filter(pk=run.pk).update(progress={"updated_at": "2020-01-01T00:00:00+00:00"})
    assert training_run_reconcile_stale(stale_after_seconds=60) == 1
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED and "training worker stopped" in run.error


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_an_admin_run_trains_in_the_training_worker_and_registers_a_candidate(dataset, owner, django_db_setup):
    worker = CeleryWorker(
        database_name=settings.DATABASES["default"]["NAME"],
        queues="training",
        extra_env={"PNEUMONIA_DATA_DIR": str(dataset), "MODEL_DIR": str(settings.MODEL_DIR)},
    )
    worker.purge_queues()
    worker.start()
    try:
        run = training_run_start(actor=owner, architecture="cnn", config=QUICK)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            run.refresh_from_db()
            if run.status in (TrainingRun.Status.SUCCEEDED, TrainingRun.Status.FAILED):
                break
            time.sleep(0.5)
    finally:
        worker.stop()
    assert run.status == TrainingRun.Status.SUCCEEDED, f"{run.error}\n{worker.log_tail()}"
    assert run.progress["epochs_total"] == 2 and run.progress["stage"] == "full"
    assert "val_auc" in run.progress["metrics"]
    [candidate] = run.model_versions.all()
    assert candidate.status == ModelVersion.Status.CANDIDATE and candidate.architecture == "cnn"
    assert Path(candidate.artifact_path).is_relative_to(settings.MODEL_DIR)
    assert candidate.manifest["data"]["patients"]["validation"] > 0
    assert run.data_summary["dataset"] == str(dataset) and run.data_summary["feedback_images"] == 0
    actions = set(AuditEvent.objects.filter(object_id=str(run.pk)).values_list("action", flat=True))
    assert {"training.requested", "training.started", "training.succeeded"} <= actions


@pytest.mark.django_db
def test_without_a_task_queue_no_run_is_recorded_and_the_refusal_says_what_to_configure(settings, dataset):
    settings.CELERY_TASK_ALWAYS_EAGER = True  # the embedded default: the run would train in the web process
    with pytest.raises(ValidationError, match="runs without a task queue") as refusal:
        training_run_start(actor=None, architecture="cnn", config=QUICK)
    assert "CELERY_BROKER_URL" in str(refusal.value) and "No training dataset" not in str(refusal.value)
    assert not TrainingRun.objects.exists()
