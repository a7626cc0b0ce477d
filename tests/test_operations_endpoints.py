"""/healthz, /readyz, worker heartbeats (manage.py worker_health) and /metrics scraped and parsed."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
import redis
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from diagnostics.models import PacsDelivery, Prediction, Study, WebhookDelivery
from diagnostics.selectors import health
from diagnostics.services.model_registry import model_version_activate, model_version_register
from worker.heartbeat import HEARTBEATS_KEY, heartbeat_write

from .conftest import copy_model_artifact, login_client
from .factories import ModelVersionFactory, PredictionFactory, StudyFactory, WebhookDeliveryFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_model_check(settings):
    """Each test sees its own model check, not one remembered from another test."""
    health._model_cache.update(at=float("-inf"), key=None, ok=False)
    settings.READYZ_MODEL_CHECK_SECONDS = 30


@pytest.fixture
def broker():
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.delete(HEARTBEATS_KEY, "portal:counters:upload_refusals", "inference", "maintenance", "training")
    yield client
    client.delete(HEARTBEATS_KEY, "portal:counters:upload_refusals")


def test_healthz_answers_ok_to_anyone_whatever_the_host(settings):
    settings.ALLOWED_HOSTS = ["portal.hospital.example"]
    settings.SECURE_SSL_REDIRECT = True
    response = Client(HTTP_HOST="10.0.0.7:8000").get("/healthz")
    assert response.status_code == 200 and response.content == b"ok\n"
    assert response["Cache-Control"] == "no-store"


def test_readyz_is_ready_with_every_check_timed_and_nothing_revealed(active_model):
    response = Client().get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database", "redis", "storage", "model"}
    for check in body["checks"].values():
        assert check["ok"] is True and isinstance(check["ms"], float) and check["ms"] >= 0
    text = response.content.decode()
    # No host, version, path or error text: only names, ok and times.
    for secret in ("127.0.0.1", "6379", "postgres", str(settings.MEDIA_ROOT), active_model.name, "/", "Error"):
        assert secret not in text, secret


def test_readyz_is_not_ready_without_an_active_model(db):
    response = Client().get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["checks"]["model"]["ok"] is False and body["checks"]["database"]["ok"] is True


def test_readyz_fails_the_model_whose_file_changed_and_remembers_its_check(tmp_path, settings):
    folder = copy_model_artifact(settings.DEFAULT_MODEL_DIR, tmp_path / "model", version_suffix="readyz")
    model_version_activate(model_version=model_version_register(artifact_dir=folder))
    assert Client().get("/readyz").status_code == 200
    (folder / "model.onnx").write_bytes(b"not the registered model")
    # Remembered for READYZ_MODEL_CHECK_SECONDS: the cheap answer, not a hash per probe.
    assert Client().get("/readyz").status_code == 200
    settings.READYZ_MODEL_CHECK_SECONDS = 0
    response = Client().get("/readyz")
    assert response.status_code == 503 and response.json()["checks"]["model"]["ok"] is False
    assert "onnx" not in response.content.decode()


def test_readyz_fails_redis_when_the_broker_is_away(active_model, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    response = Client().get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["redis"]["ok"] is False and checks["database"]["ok"] is True
    assert "127.0.0.1" not in response.content.decode() and "Connection" not in response.content.decode()


def test_readyz_fails_storage_that_cannot_be_written(active_model, settings, tmp_path):
    (tmp_path / "a-file").write_text("where the media folder should be")
    settings.MEDIA_ROOT = tmp_path / "a-file" / "media"
    response = Client().get("/readyz")
    assert response.status_code == 503 and response.json()["checks"]["storage"]["ok"] is False
    assert response.json()["checks"]["database"]["ok"] is True


def test_worker_health_reads_heartbeats(broker, capsys):
    now = time.time()
    heartbeat_write(broker, node="celery@gpu-1", queues=["inference"], now=now - 5)
    heartbeat_write(broker, node="celery@web-1", queues=["maintenance"], now=now - 500)
    assert health.workers_seen(within_seconds=60, queue="inference") == {
        "celery@gpu-1/inference": pytest.approx(5, abs=1)
    }
    assert health.workers_seen(within_seconds=60, queue="maintenance") == {}
    call_command("worker_health", "--queue", "inference", "--within", "60")
    with pytest.raises(SystemExit) as exit_info:
        call_command("worker_health", "--queue", "maintenance", "--within", "60")
    assert exit_info.value.code == 1
    with pytest.raises(SystemExit):
        call_command("worker_health", "--node", "celery@gpu-2", "--within", "60")
    call_command("worker_health", "--node", "celery@gpu-1", "--within", "60")
    assert "celery@gpu-1" in capsys.readouterr().out


def test_a_day_silent_worker_is_forgotten(broker):
    heartbeat_write(broker, node="celery@old", queues=["inference"], now=time.time() - 2 * 86400)
    heartbeat_write(broker, node="celery@new", queues=["inference"])
    assert set(health.worker_heartbeats()) == {"celery@new/inference"}


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_running_worker_beats_and_readyz_counts_it(active_model, celery_worker, broker):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not health.workers_seen(within_seconds=60, queue="inference"):
        time.sleep(0.2)
    seen = health.workers_seen(within_seconds=60, queue="inference")
    assert len(seen) == 1, celery_worker.log_tail()
    body = Client().get("/readyz").json()
    assert body["workers"] == {"inference_seen": 1, "ok": True, "ms": body["workers"]["ms"]}
    node = next(iter(seen)).split("/")[0]
    call_command("worker_health", "--node", node, "--within", "30")
    call_command("worker_health", "--this-host", "--queue", "inference", "--wait", "5")
    celery_worker.stop()  # a worker stopped on purpose removes its heartbeat
    assert health.workers_seen(within_seconds=60, queue="inference") == {}


# --- /metrics -----------------------------------------------------------------------------------------


def scrape(client: Client, **headers: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_metrics_are_off_by_default_and_need_the_token_or_an_allowed_network(settings, active_model):
    assert Client().get("/metrics").status_code == 404
    settings.METRICS_TOKEN = "s3cret-scrape-token"
    assert Client().get("/metrics").status_code == 403
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scrape-token").status_code == 200
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_NETWORKS = ["10.20.0.0/16"]
    assert Client(REMOTE_ADDR="10.20.3.4").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="10.21.3.4").get("/metrics").status_code == 403
    # Through a proxy the address seen is the proxy's: not trusted.
    assert Client(REMOTE_ADDR="10.20.3.4").get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 403


def test_metrics_scraped_and_parsed(settings, owner, patient, broker):
    settings.METRICS_TOKEN = "tok"
    model = ModelVersionFactory()
    now = timezone.now()
    for seconds, status in ((0.8, Study.Status.DONE), (3, Study.Status.DONE), (40, Study.Status.FAILED)):
        study = StudyFactory(patient=patient)
        Study.objects.filter(pk=study.pk).update(
            status=status, created_at=now - dt.timedelta(seconds=seconds), status_changed_at=now
        )
    queued = StudyFactory.create_batch(2, patient=patient)
    scored = PredictionFactory(model_version=model, latency_ms=40.0, study=queued[0])
    image = queued[1].images.get()
    Prediction.objects.create(
        image=image, model_version=model, threshold=0.5, latency_ms=300.0, outcome=Prediction.Outcome.NOT_ANALYSABLE,
        gate_code="lateral", gate_reason="A lateral film.", model_sha256=model.sha256,
        preprocessing_version=model.preprocessing_version, input_sha256=image.sha256,
    )  # fmt: skip
    WebhookDeliveryFactory(study=scored.image.study, status=WebhookDelivery.Status.FAILED)
    WebhookDeliveryFactory(study=scored.image.study, status=WebhookDelivery.Status.DELIVERED)
    broker.rpush("inference", b"m1", b"m2", b"m3")
    broker.rpush("maintenance", b"m1")
    heartbeat_write(broker, node="celery@gpu-1", queues=["inference"], now=time.time() - 3)
    # An upload over the limit: refused with 413 and counted.
    settings.UPLOAD_MAX_BYTES = 1024
    big = SimpleUploadedFile("big.jpeg", b"\xff\xd8\xff" + b"0" * (3 * 1024 * 1024), content_type="image/jpeg")
    response = login_client(owner).post(reverse("study_new", args=[patient.pk]), {"modality": "CR", "images": [big]})
    assert response.status_code == 413

    try:
        samples = scrape(Client(), HTTP_AUTHORIZATION="Bearer tok")
    finally:
        broker.delete("inference", "maintenance")

    statuses = samples["portal_studies"]
    assert statuses[(("status", "done"),)] == 2 and statuses[(("status", "failed"),)] == 1
    assert statuses[(("status", "queued"),)] == 2 and statuses[(("status", "running"),)] == 0
    latency = samples["portal_study_accept_to_result_seconds_bucket"]
    assert latency[(("le", "1.0"),)] == 1 and latency[(("le", "5.0"),)] == 2 and latency[(("le", "30.0"),)] == 2
    assert latency[(("le", "60.0"),)] == 3 and latency[(("le", "+Inf"),)] == 3
    assert samples["portal_study_accept_to_result_seconds_count"][()] == 3
    assert samples["portal_study_accept_to_result_seconds_sum"][()] == pytest.approx(43.8, abs=0.1)
    model_time = samples["portal_model_seconds_per_film_bucket"]
    assert model_time[(("le", "0.05"),)] == 1 and model_time[(("le", "0.5"),)] == 2
    assert samples["portal_model_seconds_per_film_sum"][()] == pytest.approx(0.34)
    films = samples["portal_films_assessed_total"]
    assert films[(("outcome", "scored"),)] == 1 and films[(("outcome", "not_analysable"),)] == 1
    assert samples["portal_gate_refusal_ratio_24h"][()] == pytest.approx(0.5)
    webhooks = samples["portal_webhook_deliveries"]
    assert webhooks[(("status", "failed"),)] == 1 and webhooks[(("status", "delivered"),)] == 1
    assert samples["portal_pacs_deliveries"][(("status", PacsDelivery.Status.FAILED),)] == 0
    refusals = samples["portal_upload_refusals_total"]
    assert refusals[(("status", "413"),)] == 1 and refusals[(("status", "503"),)] == 0
    depth = samples["portal_queue_depth"]
    assert depth[(("queue", "inference"),)] == 3 and depth[(("queue", "maintenance"),)] == 1
    assert depth[(("queue", "training"),)] == 0
    assert samples["portal_worker_heartbeat_age_seconds"][(("worker", "celery@gpu-1/inference"),)] == pytest.approx(
        3, abs=2
    )
    assert samples["portal_workers_seen"][(("queue", "inference"),)] == 1
    assert samples["portal_workers_seen"][(("queue", "training"),)] == 0


def test_metrics_count_the_refusals_of_every_web_process_in_redis(settings, broker):
    """Counters live in Redis: what one gunicorn worker counted, another's scrape reports."""
    from diagnostics.services.operation_counters import counter_increment, counter_read

    counter_increment(name="upload_refusals", label="507")
    counter_increment(name="upload_refusals", label="507")
    assert json.loads(json.dumps(counter_read(name="upload_refusals"))) == {"507": 2}
    assert broker.hget("portal:counters:upload_refusals", "507") == b"2"
