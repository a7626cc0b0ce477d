"""Reliable inference: a killed worker, stale studies, shadow models and promotions without restarts."""

from __future__ import annotations

import datetime
import time

import pytest
from django.conf import settings
from django.urls import reverse

from diagnostics.models import AuditEvent, ModelVersion, Prediction, Study
from diagnostics.services.inference import study_run_inference
from diagnostics.services.model_registry import model_version_activate, model_version_register
from diagnostics.services.reconcile import study_reconcile_stale

from .conftest import api_client_for, copy_model_artifact, login_client
from .factories import StudyFactory
from .worker import CeleryWorker


def wait_for_status(study_id: int, statuses: tuple[str, ...], worker: CeleryWorker, timeout: float = 60.0) -> Study:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        study = Study.objects.get(pk=study_id)
        if study.status in statuses:
            return study
        time.sleep(0.1)
    raise AssertionError(f"study {study_id} is {study.status}, not {statuses}; worker log:\n{worker.log_tail()}")


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_task_leaves_no_study_stuck(owner, patient, active_model, django_db_setup):
    database = settings.DATABASES["default"]["NAME"]
    slow = CeleryWorker(database_name=database, hold_claimed_studies_s=120)
    slow.purge_queues()
    slow.start()
    try:
        study = StudyFactory(created_by=owner, patient=patient)  # commits, so the task goes to Redis
        wait_for_status(study.pk, (Study.Status.RUNNING,), slow)
        slow.kill()  # SIGKILL while the study is claimed: no clean-up runs
    finally:
        slow.stop()
    assert Study.objects.get(pk=study.pk).status == Study.Status.RUNNING

    killed_at = time.monotonic()
    fresh = CeleryWorker(database_name=database)
    fresh.start()
    try:
        # What beat's reconciler does every RECONCILE_EVERY_SECONDS, with the default lease: the dead
        # worker stops renewing it, and once it passes the study goes back to the queue.
        counts = {"requeued": 0}
        while Study.objects.get(pk=study.pk).status != Study.Status.DONE and time.monotonic() - killed_at < 90:
            reconciled = study_reconcile_stale()
            counts["requeued"] += reconciled["requeued"]
            time.sleep(1)
        recovered_s = time.monotonic() - killed_at
        study = wait_for_status(study.pk, (Study.Status.DONE, Study.Status.FAILED), fresh)
    finally:
        fresh.stop()
    print(f"\nworker killed -> study done in {recovered_s:.1f} s (lease {settings.STUDY_LEASE_SECONDS} s)")
    assert study.status == Study.Status.DONE, study.failure_reason
    assert counts["requeued"] == 1 and recovered_s <= 60
    assert study.attempts == 2
    assert Prediction.objects.filter(image__study=study).count() == 1
    transitions = [
        (event.detail["from"], event.detail["to"])
        for event in AuditEvent.objects.filter(action="study.status_changed", object_id=str(study.pk)).order_by("pk")
    ]
    assert transitions == [("queued", "running"), ("running", "queued"), ("queued", "running"), ("running", "done")]


@pytest.mark.django_db
def test_the_reconciler_fails_a_study_after_the_attempt_limit_with_a_reason(owner, patient):
    study = StudyFactory(created_by=owner, patient=patient)
    Study.objects.filter(pk=study.pk).update(
        status=Study.Status.RUNNING, attempts=3, status_changed_at=study.created_at - datetime.timedelta(hours=1)
    )
    assert study_reconcile_stale(max_attempts=3) == {"requeued": 0, "resent": 0, "failed": 1}
    study.refresh_from_db()
    assert study.status == Study.Status.FAILED
    assert "did not complete after 3 attempts" in study.failure_reason
    page = login_client(owner).get(reverse("study_detail", args=[study.pk])).content.decode()
    assert "did not complete after 3 attempts" in page


@pytest.mark.django_db
def test_the_reconciler_leaves_fresh_and_finished_studies_alone(owner, patient, active_model):
    finished = StudyFactory(created_by=owner, patient=patient)
    study_run_inference(study_id=finished.pk)
    fresh = StudyFactory(created_by=owner, patient=patient)
    assert study_reconcile_stale() == {"requeued": 0, "resent": 0, "failed": 0}
    assert Study.objects.get(pk=fresh.pk).status == Study.Status.QUEUED


@pytest.mark.django_db
def test_a_lapsed_lease_requeues_and_a_lost_message_is_sent_again(owner, patient):
    """Running with a lapsed lease: back to the queue (a status change, audited). Queued past the
    deadline: the message is sent again, the status stays (audited as a resend). Live leases and
    fresh queued studies are left alone."""
    from django.utils import timezone

    now = timezone.now()
    lapsed, live, lost, fresh = (StudyFactory(created_by=owner, patient=patient) for _ in range(4))
    Study.objects.filter(pk=lapsed.pk).update(
        status="running", attempts=1, lease_expires_at=now - datetime.timedelta(seconds=1)
    )
    renewed = now + datetime.timedelta(seconds=20)  # claimed 5 minutes ago, still working: lease renewed
    Study.objects.filter(pk=live.pk).update(
        status="running", attempts=1, lease_expires_at=renewed, status_changed_at=now - datetime.timedelta(minutes=5)
    )
    Study.objects.filter(pk=lost.pk).update(status_changed_at=now - datetime.timedelta(seconds=31))

    assert study_reconcile_stale() == {"requeued": 1, "resent": 1, "failed": 0}
    statuses = dict(Study.objects.values_list("pk", "status"))
    assert [statuses[s.pk] for s in (lapsed, live, lost, fresh)] == ["queued", "running", "queued", "queued"]
    assert AuditEvent.objects.filter(action="study.resent", object_id=str(lost.pk)).count() == 1
    assert (
        not AuditEvent.objects.filter(action="study.status_changed", object_id=str(lost.pk))
        .exclude(detail__from="queued", detail__to="running")
        .exists()
    )
    assert study_reconcile_stale() == {"requeued": 0, "resent": 0, "failed": 0}  # the resend reset its clock


@pytest.mark.django_db
def test_a_shadow_model_predicts_but_clinicians_never_see_it(owner, patient, active_model, default_model_dir, tmp_path):
    artifact = copy_model_artifact(default_model_dir, tmp_path / "m", version_suffix="b")
    shadow = model_version_register(artifact_dir=artifact)
    ModelVersion.objects.filter(pk=shadow.pk).update(status=ModelVersion.Status.SHADOW)
    study = StudyFactory(created_by=owner, patient=patient)
    study_run_inference(study_id=study.pk)
    assert Study.objects.get(pk=study.pk).status == Study.Status.DONE
    roles = dict(Prediction.objects.filter(image__study=study).values_list("model_version_id", "role"))
    assert roles == {active_model.pk: "primary", shadow.pk: "shadow"}
    detail = api_client_for(owner).get(reverse("api_study_detail", args=[study.pk])).json()
    assert [p["model_version"] for p in detail["images"][0]["predictions"]] == [active_model.name]
    page = login_client(owner).get(reverse("study_detail", args=[study.pk])).content.decode()
    assert shadow.name not in page and active_model.name in page


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_running_worker_uses_a_newly_promoted_model_without_restart(
    owner, patient, active_model, default_model_dir, tmp_path, celery_worker
):
    first = StudyFactory(created_by=owner, patient=patient)
    wait_for_status(first.pk, (Study.Status.DONE,), celery_worker)
    challenger = model_version_register(
        artifact_dir=copy_model_artifact(default_model_dir, tmp_path / "m", version_suffix="new")
    )
    model_version_activate(model_version=challenger)
    second = StudyFactory(created_by=owner, patient=patient)
    wait_for_status(second.pk, (Study.Status.DONE,), celery_worker)
    assert Prediction.objects.get(image__study=first).model_version == active_model
    assert Prediction.objects.get(image__study=second).model_version == challenger
    assert celery_worker.process is not None and celery_worker.process.poll() is None  # same process throughout


@pytest.mark.django_db
def test_a_finished_studys_lost_webhook_is_sent_again_and_a_broker_outage_fails_nothing(owner, patient, settings):
    """The follow-ups of a finished study are queued one by one: with the broker away none raises (the
    task that finished the study does not fail); a webhook never started is sent again once the study
    has been finished for a minute, and only then."""
    import redis
    from django.utils import timezone

    from diagnostics.services.reconcile import study_reconcile_follow_ups
    from diagnostics.services.studies import study_queue_follow_ups

    from .chaos import celery_broker, free_port

    study = StudyFactory(created_by=owner, patient=patient)
    Study.objects.filter(pk=study.pk).update(status="done", callback_url="https://his.example/hook")
    with celery_broker(f"redis://127.0.0.1:{free_port()}/0"):  # nothing listens there
        study_queue_follow_ups(study_id=study.pk, status="done")  # logged, not raised

    queue = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    before = queue.llen("inference")
    assert study_reconcile_follow_ups()["webhooks_resent"] == 0  # finished just now: its task may be queued
    later = timezone.now() + datetime.timedelta(seconds=90)
    assert study_reconcile_follow_ups(now=later) == {"webhooks_resent": 1, "pacs_results_resent": 0}
    assert queue.llen("inference") == before + 1
