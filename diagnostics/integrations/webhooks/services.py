"""Signed notifications to an API client's callback_url when its study is done or failed.

Each notification is a WebhookDelivery row, created once per (study, outcome);
a Celery task attempts it and retries with backoff until it is delivered (a 2xx
answer) or the attempts run out. The body is JSON; it is signed with
HMAC-SHA256 under the webhook secret of the client's newest live API token:

    X-Portal-Timestamp: <unix seconds>
    X-Portal-Signature: sha256=<hex of HMAC(secret, "<timestamp>." + body)>

so a receiver can check both the body and its freshness. Redirects are not
followed: a 3xx counts as a failed attempt.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from diagnostics.models import Prediction, Study, WebhookDelivery
from diagnostics.selectors import study_film_results, study_get_with_results, study_summary
from diagnostics.selectors.warnings import study_warnings
from diagnostics.services.api_tokens import api_token_signing_secret
from diagnostics.services.audit import audit_record

EVENT_STUDY_FINISHED = "study.finished"
SIGNATURE_HEADER = "X-Portal-Signature"
TIMESTAMP_HEADER = "X-Portal-Timestamp"
TIMEOUT_SECONDS = 10
MAX_ERROR_CHARS = 1000


class WebhookNotDelivered(Exception):
    """An attempt failed in a way a later attempt may not (no answer, or a non-2xx one)."""


def webhook_url_allowed(url: str) -> bool:
    """Whether a callback may be sent to `url`: http(s), and every address it resolves to is public,
    unless its host is in WEBHOOK_ALLOWED_HOSTS. Checked when the study is created and again before
    each delivery, so a name that later resolves inside the hospital network is refused (SSRF)."""
    parts = urlsplit(url)
    if url_port_problem(url):
        return False
    if parts.scheme in ("http", "https") and parts.hostname in settings.WEBHOOK_ALLOWED_HOSTS:
        return True
    return webhook_checked_address(url) is not None


def webhook_checked_address(url: str) -> str | None:
    """The address a delivery to `url` connects to, resolved once and checked (None: refused).

    The delivery connects to exactly this address (webhook_post): a second lookup could answer
    differently (DNS rebinding) and reach an address that was never checked."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or url_port_problem(url):
        return None
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except (socket.gaierror, UnicodeError):
        return None
    addresses = [str(info[4][0]).split("%")[0] for info in infos]
    if not addresses:
        return None
    if parts.hostname not in settings.WEBHOOK_ALLOWED_HOSTS and not all(public_address(a) for a in addresses):
        return None
    return addresses[0]


class _PinnedAdapter(requests.adapters.HTTPAdapter):
    """Connects to the URL's (checked) address while TLS still checks the certificate of the name."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["server_hostname"] = self.hostname  # SNI, and the name the certificate must carry
        kwargs["assert_hostname"] = self.hostname
        super().init_poolmanager(*args, **kwargs)


def webhook_post(url: str, address: str, *, body: bytes, headers: dict[str, str]) -> requests.Response:
    """POST to `url`, connecting to `address` (from webhook_checked_address), with the URL's own Host."""
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    netloc = f"{host}:{parts.port}" if parts.port else host
    pinned_url = parts._replace(netloc=netloc).geturl()
    host_header = parts.hostname if not parts.port else f"{parts.hostname}:{parts.port}"
    with requests.Session() as session:
        session.mount(f"{parts.scheme}://", _PinnedAdapter(str(parts.hostname)))
        return session.post(
            pinned_url,
            data=body,
            headers={**headers, "Host": str(host_header)},
            timeout=TIMEOUT_SECONDS,
            allow_redirects=False,
        )


def url_port_problem(url: str) -> str | None:
    """What is wrong with the URL's port, if anything (urlsplit raises on 99999; port 0 reaches nothing)."""
    try:
        port = urlsplit(url).port
    except ValueError:
        return "The callback URL's port must be a number from 1 to 65535."
    if port == 0:
        return "The callback URL's port must be a number from 1 to 65535."
    return None


# The well-known NAT64 prefix (RFC 6052) embeds an IPv4 address in the last 32 bits: judge that one.
NAT64_PREFIXES = (ipaddress.ip_network("64:ff9b::/96"),)
# Ranges Python 3.11's is_global lets through that no callback may reach.
NOT_PUBLIC_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in (
        "192.0.0.0/24",  # IETF protocol assignments: 192.0.0.8 (dummy address, RFC 7600), DS-Lite, NAT64 discovery
        "192.88.99.0/24",  # 6to4 relay anycast (RFC 7526, deprecated)
        "2002::/16",  # 6to4: embeds an IPv4 address, 127.0.0.1 or a private one as readily as a public one
        "2001::/32",  # Teredo: tunnels to an IPv4 address hidden in the last 32 bits (XOR-ed)
        "fec0::/10",  # site-local (deprecated, RFC 3879): inside a site by definition
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215): translates to the operator's own IPv4 space
    )
)


def public_address(text: str) -> bool:
    """A globally routable unicast address: not private, loopback, link-local, shared, documentation,
    reserved, unspecified or multicast (Python's is_global alone lets 224.0.0.0/4 through), nor in
    NOT_PUBLIC_NETWORKS (6to4, Teredo, site-local, local-use NAT64, 192.0.0.0/24, the 6to4 relay), and for
    IPv4-mapped or NAT64 IPv6 addresses, the IPv4 address inside must be public too."""
    address = ipaddress.ip_address(text.split("%")[0])
    if any(address in network for network in NOT_PUBLIC_NETWORKS):
        return False
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return public_address(str(address.ipv4_mapped))
        if any(address in prefix for prefix in NAT64_PREFIXES):
            return public_address(str(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)))
    return address.is_global and not (address.is_multicast or address.is_reserved or address.is_unspecified)


def webhook_url_check(*, url: str) -> None:
    if problem := url_port_problem(url):
        raise ValidationError({"callback_url": problem})
    if not webhook_url_allowed(url):
        raise ValidationError(
            {
                "callback_url": "The callback URL must be http(s) and resolve to a public address "
                "(an administrator can allow-list an internal host with WEBHOOK_ALLOWED_HOSTS)."
            }
        )


def webhook_signature(*, secret: str, timestamp: int, body: bytes) -> str:
    """The X-Portal-Signature value for `body` sent at `timestamp`."""
    message = f"{timestamp}.".encode() + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _study_payload(study: Study) -> dict[str, Any]:
    # The study's warnings and, for a done study without an AI result, why: as the study page says them.
    loaded = study_get_with_results(study_id=study.pk)
    summary = study_summary(status=study.status, results=study_film_results(study=loaded, heatmaps=False))
    images = []
    for image in study.images.order_by("pk"):
        # Only what clinicians see: shadow predictions never leave the portal.
        shown = image.predictions.filter(role=Prediction.Role.PRIMARY).select_related("model_version")
        images.append(
            {
                "id": image.pk,
                "predictions": [
                    {
                        "id": prediction.pk,
                        "outcome": prediction.outcome,
                        "label": prediction.label or None,
                        "probability": prediction.probability,
                        "threshold": prediction.threshold,
                        "not_analysable_reason": prediction.gate_reason or None,
                        "intended_use_warning": prediction.intended_use_warning or None,
                        "model_version": prediction.model_version.name,
                    }
                    for prediction in shown.order_by("-created_at", "-pk")
                ],
            }
        )
    return {
        "event": EVENT_STUDY_FINISHED,
        "study_id": study.pk,
        "patient_id": study.patient_id,
        "accession_number": study.accession_number,
        "status": study.status,
        "failure_reason": study.failure_reason,
        "no_result_reason": summary.no_result_reason or None,
        "warnings": [warning.as_dict() for warning in study_warnings(study=loaded)],
        "finished_at": study.status_changed_at.isoformat(),
        "status_path": reverse("api_study_detail", kwargs={"study_id": study.pk}),
        "images": images,
    }


def _delivery_for(study_id: int, status: str) -> WebhookDelivery | None:
    """The delivery of this study's `status` outcome, created on first call; None without a callback_url."""
    study = Study.objects.select_related("patient").filter(pk=study_id).first()
    if study is None or not study.callback_url:
        return None
    with transaction.atomic():
        # Lock the study so that two tasks for the same outcome create one delivery between them.
        Study.objects.select_for_update().filter(pk=study.pk).first()
        existing = WebhookDelivery.objects.filter(
            study=study, event=EVENT_STUDY_FINISHED, payload__status=status
        ).first()
        if existing is not None:
            return existing
        payload = _study_payload(study)
        payload["status"] = status  # the outcome this notification is about
        delivery = WebhookDelivery.objects.create(
            study=study, url=study.callback_url, event=EVENT_STUDY_FINISHED, payload=payload
        )
        audit_record(
            action="webhook.queued",
            target=delivery,
            team_id=study.patient.team_id,
            detail={"study": study.pk, "url": delivery.url, "status": status},
        )
    return delivery


def _record_attempt(
    delivery: WebhookDelivery, *, delivered: bool, final: bool, response_code: int | None, error: str
) -> None:
    delivery.attempts += 1
    delivery.last_response_code = response_code
    delivery.last_error = error[:MAX_ERROR_CHARS]
    if delivered:
        delivery.status = WebhookDelivery.Status.DELIVERED
        delivery.delivered_at = timezone.now()
    elif final:
        delivery.status = WebhookDelivery.Status.FAILED
    delivery.save(update_fields=["attempts", "last_response_code", "last_error", "status", "delivered_at"])
    audit_record(
        action={True: "webhook.delivered", False: "webhook.failed" if final else "webhook.attempt_failed"}[delivered],
        target=delivery,
        team_id=delivery.study.patient.team_id,
        detail={"attempt": delivery.attempts, "response_code": response_code, "error": delivery.last_error},
    )


def webhook_enqueue_for_study(*, study_id: int, status: str) -> None:
    """Queue the finished study's notification, if it was created with a callback_url."""
    if Study.objects.filter(pk=study_id).exclude(callback_url="").exists():
        from .tasks import deliver_study_webhook  # the tasks import the services

        deliver_study_webhook.delay(study_id, status)


def webhook_notify_study_finished(*, study_id: int, status: str, final: bool) -> WebhookDelivery | None:
    """Attempt (again) to tell the study's callback_url that it finished with `status`.

    Returns the delivery (None when the study has no callback_url). Raises
    WebhookNotDelivered when the attempt failed and `final` is False, so the
    caller retries later; with `final`, the delivery is marked failed instead.
    """
    delivery = _delivery_for(study_id, status)
    if delivery is None or delivery.status != WebhookDelivery.Status.PENDING:
        return delivery
    if urlsplit(delivery.url).scheme not in ("http", "https"):
        _record_attempt(delivery, delivered=False, final=True, response_code=None, error="Not an http(s) URL.")
        return delivery
    if not webhook_url_allowed(delivery.url):
        failure = "The callback URL points at a private or local address that is not allow-listed."
        _record_attempt(delivery, delivered=False, final=True, response_code=None, error=failure)
        return delivery
    secret = api_token_signing_secret(user=delivery.study.created_by, token=delivery.study.api_token)
    if secret is None:
        # An unsigned notification is never sent; fail now rather than retry for hours.
        failure = "The client has no live API token to sign with (all revoked)."
        _record_attempt(delivery, delivered=False, final=True, response_code=None, error=failure)
        return delivery
    body = json.dumps(delivery.payload, sort_keys=True, separators=(",", ":")).encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "pneumonia-portal-webhooks/1",
        "X-Portal-Event": delivery.event,
        "X-Portal-Delivery": str(delivery.pk),
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: webhook_signature(secret=secret, timestamp=timestamp, body=body),
    }
    try:
        # Resolved and checked once more, and that very address is the one connected to.
        address = webhook_checked_address(delivery.url)
        if address is None:
            raise requests.ConnectionError("The callback host no longer resolves to an allowed address.")
        response = webhook_post(delivery.url, address, body=body, headers=headers)
    except requests.RequestException as error:
        _record_attempt(delivery, delivered=False, final=final, response_code=None, error=str(error))
    else:
        ok = 200 <= response.status_code < 300
        # The status code only: a receiver's error body may echo anything, and the API returns last_error.
        failure = "" if ok else f"HTTP {response.status_code}"
        _record_attempt(delivery, delivered=ok, final=final, response_code=response.status_code, error=failure)
        if ok:
            return delivery
    if not final:
        raise WebhookNotDelivered(delivery.last_error)
    return delivery
