"""A broker outage must never stop an inference worker (issue 31, item 5): a real Redis of the test's
own is killed and restarted 20 times while a prefork worker (production's pool) has studies running,
then kept down for a while; every worker process must still be alive and consuming, and every study
must complete. Before worker/broker.py, kombu 5.7's ack on the closed channel ended the worker with
"Unrecoverable error: AttributeError('NoneType' object has no attribute 'hostname')" at the first kill."""

from __future__ import annotations

import time

import pytest
from django.conf import settings

from diagnostics.models import Study

from .chaos import PrivateRedis, celery_broker
from .test_chaos import assert_one_prediction_each, make_studies, reconcile_until_done
from .worker import CeleryWorker

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

KILLS = 20


def wait_for_running(timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if Study.objects.filter(status=Study.Status.RUNNING).exists():
            return True
        time.sleep(0.05)
    return False


def test_a_prefork_worker_survives_twenty_redis_kills_and_an_outage_under_load(
    owner, patient, active_model, django_db_setup, tmp_path
):
    broker = PrivateRedis(tmp_path / "redis", persistent=True)
    broker.start()
    worker = CeleryWorker(
        database_name=settings.DATABASES["default"]["NAME"],
        extra_env={"CELERY_BROKER_URL": broker.url},
        hold_claimed_studies_s=1.0,  # each batch stays running long enough for a kill to land in it
        pool="prefork",
        concurrency=2,
    )
    studies: list[Study] = []
    try:
        with celery_broker(broker.url):
            worker.start()
            pool = worker.pool_pids()
            assert len(pool) == 2, worker.log_tail()
            kills_mid_study = 0
            for round_ in range(KILLS):
                studies += make_studies(owner, patient, 2)
                kills_mid_study += wait_for_running()
                broker.stop()
                time.sleep(3.0 if round_ == KILLS - 1 else 0.3)  # the last one: a longer outage
                broker.start()
                time.sleep(0.5)
                assert worker.process is not None and worker.process.poll() is None, worker.log_tail(80)
            assert kills_mid_study >= KILLS // 2, f"only {kills_mid_study} kills caught a running study"
            studies += make_studies(owner, patient, 4)  # consuming afterwards: new work is taken
            reconcile_until_done(studies, worker, timeout=150, log_lines=120)
            assert worker.process.poll() is None, "the worker died"
            alive = worker.pool_pids()
            assert len(alive) == 2, f"pool processes {pool} -> {alive}"
    finally:
        worker.stop()
        broker.stop()
    assert_one_prediction_each(studies)
    log = worker.log_tail(20000)
    assert "Unrecoverable error" not in log
    assert "Restoring" in log  # the kills did land while messages were unacknowledged
