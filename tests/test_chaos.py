"""Fault tests against the real services: Redis restarted with studies queued, Postgres cut mid-task.

Pass means: no study stuck in queued/running once the reconciler has run, exactly
one prediction per (image, model), no lost upload.
"""

from __future__ import annotations

import datetime
import time

import pytest
from django.conf import settings
from django.db import connection

from diagnostics.models import Image, Prediction, Study
from diagnostics.services.images import image_validate_upload
from diagnostics.services.reconcile import study_reconcile_stale
from diagnostics.services.studies import study_create

from .chaos import PrivateRedis, celery_broker
from .images import jpeg_bytes
from .worker import CeleryWorker

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def make_studies(owner, patient, count: int) -> list[Study]:
    uploads = [image_validate_upload(filename=f"{i}.jpeg", data=jpeg_bytes(seed=i)) for i in range(count)]
    return [study_create(user=owner, patient=patient, uploads=[upload]) for upload in uploads]


def wait_until_finished(studies: list[Study], worker: CeleryWorker, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    pending = {s.pk for s in studies}
    while pending and time.monotonic() < deadline:
        unfinished = Study.objects.filter(pk__in=pending).exclude(status__in=["done", "failed"])
        pending = set(unfinished.values_list("pk", flat=True))
        time.sleep(0.2)
    assert not pending, f"studies {sorted(pending)} still unfinished; worker log:\n{worker.log_tail()}"


def reconcile_until_done(studies: list[Study], worker: CeleryWorker, *, timeout: float, log_lines: int) -> None:
    """Run beat's reconciler (with its defaults) every second until every study is done; fails with the end of
    the worker's log."""
    deadline = time.monotonic() + timeout
    pending = {s.pk for s in studies}
    while pending and time.monotonic() < deadline:
        study_reconcile_stale()
        pending = set(Study.objects.filter(pk__in=pending).exclude(status="done").values_list("pk", flat=True))
        time.sleep(1)
    assert not pending, worker.log_tail(log_lines)


def assert_one_prediction_each(studies: list[Study]) -> None:
    for study in Study.objects.filter(pk__in=[s.pk for s in studies]):
        assert study.status == Study.Status.DONE, study.failure_reason
        assert Image.objects.filter(study=study).count() == 1  # no lost upload
        assert Prediction.objects.filter(image__study=study).count() == 1


@pytest.mark.parametrize("persistent", [True, False], ids=["append-only-file", "no-persistence"])
def test_redis_restarted_while_studies_are_queued(owner, patient, active_model, django_db_setup, tmp_path, persistent):
    broker = PrivateRedis(tmp_path / "redis", persistent=persistent)
    broker.start()
    worker = CeleryWorker(database_name=settings.DATABASES["default"]["NAME"])
    try:
        with celery_broker(broker.url):
            studies = make_studies(owner, patient, 3)
            assert broker.queued_messages() == 3
            broker.restart()
            # With an append-only file (the production setting) the messages survive; without, they are lost.
            assert broker.queued_messages() == (3 if persistent else 0)
            worker.extra_env["CELERY_BROKER_URL"] = broker.url
            worker.start()
            if not persistent:
                time.sleep(1)
                assert Study.objects.filter(status=Study.Status.QUEUED).count() == 3  # nothing to do for the worker
                # Beat's reconciler re-sends what Redis forgot.
                assert study_reconcile_stale(stale_after=datetime.timedelta(0))["resent"] == 3
            wait_until_finished(studies, worker)
    finally:
        worker.stop()
        broker.stop()
    assert_one_prediction_each(studies)


def test_postgres_connection_dropped_during_a_task(owner, patient, active_model, django_db_setup):
    database = settings.DATABASES["default"]["NAME"]
    worker = CeleryWorker(database_name=database, hold_claimed_studies_s=3)
    worker.purge_queues()
    worker.start()
    try:
        [study] = make_studies(owner, patient, 1)
        deadline = time.monotonic() + 60
        while Study.objects.get(pk=study.pk).status != Study.Status.RUNNING and time.monotonic() < deadline:
            time.sleep(0.05)
        assert Study.objects.get(pk=study.pk).status == Study.Status.RUNNING, worker.log_tail()
        with connection.cursor() as cursor:  # cut every other session on the test database: the worker's
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                [database],
            )
            assert cursor.fetchone()[0] >= 1
        # The task fails on its next query and retries; whatever it left, the reconciler finishes the job.
        deadline = time.monotonic() + 60
        while Study.objects.get(pk=study.pk).status != Study.Status.DONE and time.monotonic() < deadline:
            study_reconcile_stale(stale_after=datetime.timedelta(seconds=3))
            time.sleep(0.5)
    finally:
        worker.stop()
    assert_one_prediction_each([study])
    assert "OperationalError" in worker.log_tail(200) or "InterfaceError" in worker.log_tail(200)


def test_the_worker_keeps_consuming_through_ten_broker_restarts(
    owner, patient, active_model, django_db_setup, tmp_path
):
    """Redis killed and restarted ten times in a row while a worker is connected, a study posted each
    time: the worker reconnects every time and keeps consuming; a message the portal could not send
    at the moment Redis went away is sent again by the reconciler (run as beat runs it), and a
    worker whose follow-ups could not be queued does not fail the study."""
    broker = PrivateRedis(tmp_path / "redis", persistent=True)
    broker.start()
    worker = CeleryWorker(
        database_name=settings.DATABASES["default"]["NAME"], extra_env={"CELERY_BROKER_URL": broker.url}
    )
    try:
        with celery_broker(broker.url):
            worker.start()
            studies = []
            for _ in range(10):
                studies += make_studies(owner, patient, 1)
                broker.restart()
                time.sleep(0.5)
            assert worker.process is not None and worker.process.poll() is None, worker.log_tail()
            studies += make_studies(owner, patient, 2)
            reconcile_until_done(studies, worker, timeout=120, log_lines=80)
            assert worker.process.poll() is None, "the worker died"
    finally:
        worker.stop()
        broker.stop()
    assert_one_prediction_each(studies)
    log = worker.log_tail(5000)
    assert "Unrecoverable error" not in log
    assert "raised unexpected: OperationalError" not in log  # follow-ups that could not be queued are logged
