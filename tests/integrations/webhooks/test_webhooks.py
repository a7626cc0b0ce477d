"""Signed webhooks when a study finishes: payload, signature, retries with backoff, recorded deliveries."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from django.utils import timezone

from diagnostics.integrations.webhooks.services import WebhookNotDelivered, webhook_notify_study_finished
from diagnostics.integrations.webhooks.tasks import deliver_study_webhook
from diagnostics.models import ApiToken, AuditEvent, Study, WebhookDelivery
from diagnostics.services.studies import study_finish
from tests.images import jpeg_bytes
from worker.queues import WEBHOOK_MAX_RETRIES

from ...conftest import require_tool
from ...factories import ModelVersionFactory, PredictionFactory
from .receiver import WebhookReceiver


def verify(received, secret: str) -> dict:
    """What an integrator does: recompute the HMAC over "<timestamp>.<body>" and compare in constant time."""
    timestamp = received.headers["X-Portal-Timestamp"]
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + received.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(received.headers["X-Portal-Signature"], f"sha256={expected}")
    assert abs(time.time() - int(timestamp)) < 300
    return json.loads(received.body)


def create_study(client, patient, callback_url: str) -> Study:
    response = client.post(
        "/api/v1/studies/",
        {
            "patient_id": patient.pk,
            "accession_number": "ACC-W",
            "callback_url": callback_url,
            "images": [{"filename": "c.jpeg", "content_base64": base64.b64encode(jpeg_bytes()).decode()}],
        },
    )
    assert response.status_code == 202, response.content
    return Study.objects.get(pk=response.json()["id"])


def finish(study: Study) -> Study:
    """As the worker does: primary and shadow predictions, then done."""
    image = study.images.get()
    PredictionFactory(image=image, model_version=ModelVersionFactory(name="cnn@1", status="active"), probability=0.87)
    PredictionFactory(
        image=image, model_version=ModelVersionFactory(name="cnn@2", status="shadow"), probability=0.02, role="shadow"
    )
    Study.objects.filter(pk=study.pk).update(status=Study.Status.DONE, status_changed_at=timezone.now())
    study.refresh_from_db()
    return study


@pytest.mark.django_db
def test_a_finished_study_is_posted_signed_to_its_callback_url(machine, patient):
    with WebhookReceiver() as receiver:
        study = finish(create_study(machine.client, patient, receiver.url))
        delivery = webhook_notify_study_finished(study_id=study.pk, status="done", final=False)
        [received] = receiver.received
    assert received.path == "/hooks/pneumonia"
    assert received.headers["Content-Type"] == "application/json"
    assert received.headers["X-Portal-Event"] == "study.finished"
    assert received.headers["X-Portal-Delivery"] == str(delivery.pk)
    payload = verify(received, machine.token.webhook_secret)
    assert payload["study_id"] == study.pk and payload["status"] == "done"
    assert payload["status_path"] == f"/api/v1/studies/{study.pk}/"
    [image] = payload["images"]
    # Only the prediction clinicians see; the shadow model's never leaves the portal.
    assert [(p["label"], p["probability"]) for p in image["predictions"]] == [("PNEUMONIA", 0.87)]

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_response_code) == ("delivered", 1, 200)
    assert delivery.delivered_at is not None and delivery.payload == payload
    assert AuditEvent.objects.filter(action="webhook.delivered", object_id=str(delivery.pk)).exists()
    # The client can see the delivery through the API.
    [listed] = machine.client.get(f"/api/v1/studies/{study.pk}/webhook-deliveries/").json()["results"]
    assert listed["status"] == "delivered" and listed["attempts"] == 1


@pytest.mark.django_db
def test_a_tampered_body_does_not_verify(machine, patient):
    with WebhookReceiver() as receiver:
        study = finish(create_study(machine.client, patient, receiver.url))
        webhook_notify_study_finished(study_id=study.pk, status="done", final=False)
        [received] = receiver.received
    tampered = type(received)(received.path, received.headers, received.body.replace(b"PNEUMONIA", b"NORMAL"))
    with pytest.raises(AssertionError):
        verify(tampered, machine.token.webhook_secret)
    with pytest.raises(AssertionError):
        verify(received, "another-clients-secret")


@pytest.mark.django_db
def test_failed_attempts_are_retried_by_the_task_until_delivered(machine, patient):
    with WebhookReceiver(statuses=[500, 503]) as receiver:
        study = finish(create_study(machine.client, patient, receiver.url))
        deliver_study_webhook.apply(args=(study.pk, "done"))  # eager: retries run at once, without the backoff wait
        assert len(receiver.received) == 3
    delivery = WebhookDelivery.objects.get(study=study)
    assert (delivery.status, delivery.attempts, delivery.last_response_code, delivery.last_error) == (
        "delivered",
        3,
        200,
        "",
    )
    assert AuditEvent.objects.filter(action="webhook.attempt_failed", object_id=str(delivery.pk)).count() == 2


@pytest.mark.django_db
def test_a_delivery_is_given_up_after_the_last_retry(machine, patient):
    with WebhookReceiver(statuses=[500] * 50) as receiver:
        study = finish(create_study(machine.client, patient, receiver.url))
        deliver_study_webhook.apply(args=(study.pk, "done"))
        assert len(receiver.received) == WEBHOOK_MAX_RETRIES + 1
    delivery = WebhookDelivery.objects.get(study=study)
    assert (delivery.status, delivery.attempts, delivery.last_response_code) == ("failed", WEBHOOK_MAX_RETRIES + 1, 500)
    assert delivery.last_error.startswith("HTTP 500")
    assert AuditEvent.objects.filter(action="webhook.failed", object_id=str(delivery.pk)).count() == 1


def test_the_task_backs_off_exponentially_with_jitter():
    options = deliver_study_webhook
    assert options.autoretry_for and WebhookNotDelivered in options.autoretry_for
    assert (options.retry_backoff, options.retry_backoff_max, options.retry_jitter) == (30, 3600, True)
    assert options.acks_late is True and options.max_retries == WEBHOOK_MAX_RETRIES


@pytest.mark.django_db
def test_an_unreachable_receiver_is_a_retryable_failure(machine, patient):
    with WebhookReceiver() as closed:
        url = closed.url
    study = finish(create_study(machine.client, patient, url))
    with pytest.raises(WebhookNotDelivered):
        webhook_notify_study_finished(study_id=study.pk, status="done", final=False)
    delivery = WebhookDelivery.objects.get(study=study)
    assert delivery.status == "pending" and delivery.attempts == 1 and delivery.last_response_code is None
    assert "Connection refused" in delivery.last_error or "connect" in delivery.last_error.lower()


@pytest.mark.django_db
def test_nothing_unsigned_is_ever_sent(machine, patient):
    with WebhookReceiver() as receiver:
        study = finish(create_study(machine.client, patient, receiver.url))
        ApiToken.objects.filter(pk=machine.token.pk).update(revoked_at=timezone.now())
        delivery = webhook_notify_study_finished(study_id=study.pk, status="done", final=False)
        assert receiver.received == []
    assert delivery.status == "failed" and "no live API token" in delivery.last_error


@pytest.mark.django_db
def test_one_delivery_per_outcome_and_none_without_a_callback(machine, patient):
    with WebhookReceiver() as receiver:
        study = finish(create_study(machine.client, patient, receiver.url))
        webhook_notify_study_finished(study_id=study.pk, status="done", final=False)
        webhook_notify_study_finished(study_id=study.pk, status="done", final=False)
        assert len(receiver.received) == 1
    assert WebhookDelivery.objects.count() == 1
    Study.objects.filter(pk=study.pk).update(callback_url="")
    assert webhook_notify_study_finished(study_id=study.pk, status="failed", final=False) is None


@pytest.mark.django_db
def test_a_finished_study_enqueues_a_delivery_only_if_it_has_a_callback(
    machine, owner, patient, monkeypatch, django_capture_on_commit_callbacks
):
    sent: list[tuple] = []
    monkeypatch.setattr(deliver_study_webhook, "delay", lambda *args: sent.append(args))
    with_callback = create_study(machine.client, patient, "https://his.example/hook")
    without = create_study(machine.client, patient, "")
    for study in (with_callback, without):
        with django_capture_on_commit_callbacks(execute=True):
            study_finish(study=study, status=Study.Status.FAILED, reason="No active AI model is registered.")
    assert sent == [(with_callback.pk, "failed")]


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_the_worker_notifies_the_callback_url_when_the_prediction_is_ready(
    machine, patient, active_model, celery_worker
):
    with WebhookReceiver() as receiver:
        study = create_study(machine.client, patient, receiver.url)
        received = receiver.wait_for(1, timeout=90)
        assert received, f"no webhook arrived; worker log:\n{celery_worker.log_tail()}"
    payload = verify(received[0], machine.token.webhook_secret)
    study.refresh_from_db()
    assert study.status == Study.Status.DONE and payload["status"] == "done"
    prediction = study.images.get().predictions.get()
    assert payload["images"][0]["predictions"][0]["probability"] == pytest.approx(prediction.probability)
    assert payload["images"][0]["predictions"][0]["model_version"] == active_model.name
    delivery = WebhookDelivery.objects.get(study=study)
    deadline = time.monotonic() + 10
    while delivery.status == "pending" and time.monotonic() < deadline:
        time.sleep(0.1)
        delivery.refresh_from_db()
    assert delivery.status == "delivered" and delivery.attempts == 1


def test_the_webhook_is_signed_with_the_token_that_created_the_study():
    from django.utils import timezone

    from diagnostics.models import ApiToken, User
    from diagnostics.services.api_tokens import api_token_signing_secret

    creator = ApiToken(webhook_secret="creator-secret")
    nobody = User(username="unsaved")
    assert api_token_signing_secret(user=nobody, token=creator) == "creator-secret"
    creator.revoked_at = timezone.now()
    assert api_token_signing_secret(user=nobody, token=creator) is None  # a revoked token signs nothing


@pytest.mark.parametrize(
    "address",
    [
        "224.0.0.1",  # multicast: Python's is_global says True
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b:1::a00:1",  # local-use NAT64 of 10.0.0.1
        "::ffff:127.0.0.1",
        "240.0.0.1",
        "192.0.2.10",
        "2001:db8::1",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104 - an address to refuse, not one to bind
        "169.254.169.254",
        # Python 3.11's is_global says True for each of these (issue 31's attack pass sent them through):
        "2002:7f00:1::1",  # 6to4 embedding 127.0.0.1
        "2002:5db8:d822::1",  # 6to4 of a public address: the whole prefix is refused
        "fec0::1",  # site-local
        "192.0.0.8",  # IPv4 dummy address
        "192.88.99.1",  # 6to4 relay anycast
        "64:ff9b:1::5db8:d822",  # local-use NAT64, whatever it embeds
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    ],
)
def test_no_non_public_address_is_a_webhook_target(address):
    from diagnostics.integrations.webhooks.services import public_address

    assert not public_address(address)


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["https://hooks.example:99999/x", "http://hooks.example:0/x", "http://[::1]:70000/"])
def test_a_callback_url_with_an_impossible_port_is_a_clear_400(machine, patient, url):
    response = machine.client.post(
        "/api/v1/studies/",
        {
            "patient_id": patient.pk,
            "callback_url": url,
            "images": [{"filename": "c.jpeg", "content_base64": base64.b64encode(jpeg_bytes()).decode()}],
        },
    )
    assert response.status_code == 400, response.content  # was 500: urlsplit's port raised ValueError
    assert "port must be a number from 1 to 65535" in json.dumps(response.json())
    assert not Study.objects.filter(callback_url=url).exists()


def test_a_stored_url_with_an_impossible_port_is_never_delivered_to():
    from diagnostics.integrations.webhooks.services import webhook_checked_address, webhook_url_allowed

    assert webhook_checked_address("https://hooks.example:99999/x") is None
    assert not webhook_url_allowed("https://hooks.example:99999/x")


def test_public_addresses_are_webhook_targets():
    from diagnostics.integrations.webhooks.services import public_address

    assert public_address("93.184.216.34") and public_address("2606:4700::1111")
    assert public_address("64:ff9b::5db8:d822")  # NAT64 of a public IPv4 address


@pytest.mark.django_db
def test_a_delivery_connects_to_the_address_it_checked_so_dns_rebinding_reaches_nothing(machine, patient, monkeypatch):
    """The name answers a public address twice (at creation and to the delivery's check), then 127.0.0.1
    (rebinding): the delivery connects only to an address it checked, so it reaches nothing local."""
    import socket

    from diagnostics.integrations.webhooks import services as webhooks

    monkeypatch.setattr(webhooks, "TIMEOUT_SECONDS", 2)
    real_getaddrinfo = socket.getaddrinfo
    lookups: list[str] = []

    def rebinding(host, port, *args, **kwargs):
        if host != "rebind.example":
            return real_getaddrinfo(host, port, *args, **kwargs)
        lookups.append(host)
        address = "192.0.2.44" if len(lookups) <= 2 else "127.0.0.1"  # creation and first check; then rebound
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.setattr(webhooks, "public_address", lambda address: address == "192.0.2.44")  # stands for public
    with WebhookReceiver() as receiver:
        port = receiver.url.split(":")[-1].split("/")[0]
        study = finish(create_study(machine.client, patient, f"http://rebind.example:{port}/hook"))
        webhook_notify_study_finished(study_id=study.pk, status="done", final=True)
        assert receiver.received == []  # the old code looked the name up again and posted to 127.0.0.1
    assert len(lookups) == 3
    delivery = WebhookDelivery.objects.get(study=study)
    assert delivery.status == "failed" and delivery.last_response_code is None


def test_https_to_a_pinned_address_still_checks_the_certificate_of_the_name(tmp_path, monkeypatch):
    """webhook_post connects to the checked address but speaks TLS to the name: SNI, the certificate's
    name and the Host header are the URL's; a certificate for another name is refused."""
    import shutil
    import ssl
    import subprocess
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import requests

    from diagnostics.integrations.webhooks.services import webhook_post

    require_tool(shutil.which("openssl"), "openssl (it makes the test certificate)")
    cert, key = tmp_path / "his.crt", tmp_path / "his.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=his.example", "-addext", "subjectAltName=DNS:his.example"],
        check=True, capture_output=True,
    )  # fmt: skip
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))  # trust the test certificate, as a hospital CA would be
    hosts: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            hosts.append(self.headers.get("Host", ""))
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    port = server.server_address[1]
    try:
        response = webhook_post(f"https://his.example:{port}/hook", "127.0.0.1", body=b"{}", headers={})
        assert response.status_code == 204 and hosts == [f"his.example:{port}"]
        with pytest.raises(requests.exceptions.SSLError):
            webhook_post(f"https://other.example:{port}/hook", "127.0.0.1", body=b"{}", headers={})
    finally:
        server.shutdown()


@pytest.mark.django_db
def test_the_payload_carries_the_studys_warnings_and_why_it_has_no_result(machine, patient):
    """Issue 29 item 5: the webhook says what the study page says: the warnings, and for a done study with no
    scored film, that there is no AI result and why (here a six-month-old's film the gate refused)."""
    import datetime

    from diagnostics.integrations.webhooks.services import _study_payload
    from diagnostics.models import Prediction

    patient.birth_date = datetime.date.today() - datetime.timedelta(days=190)
    patient.save()
    study = create_study(machine.client, patient, "https://his.example/hooks/pneumonia")
    model = ModelVersionFactory(name="cnn@0")
    Prediction.objects.create(
        image=study.images.get(), model_version=model, outcome="not_analysable", gate_code="blank",
        gate_reason="The image is blank.", threshold=0.5, latency_ms=1.0, model_sha256="0" * 64,
        preprocessing_version="v", input_sha256="0" * 64,
    )  # fmt: skip
    Study.objects.filter(pk=study.pk).update(status=Study.Status.DONE)
    study.refresh_from_db()
    payload = _study_payload(study)
    assert payload["no_result_reason"] == "The AI could not read the study's film. Image 1: The image is blank."
    [warning] = payload["warnings"]
    assert warning["code"] == "outside_intended_use" and warning["title"] == "Outside intended use"
    assert warning["message"][0].isupper() and "6 months old" in warning["message"]
    assert json.loads(json.dumps(payload)) == payload

    scored = finish(create_study(machine.client, patient, "https://his.example/hooks/pneumonia"))
    assert _study_payload(scored)["no_result_reason"] is None
