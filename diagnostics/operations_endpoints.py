"""/healthz, /readyz and /metrics: what a load balancer, an orchestrator and Prometheus ask the web process.

A middleware placed first answers them before anything else runs: no session, no host check (a
container's probe calls 127.0.0.1 whatever ALLOWED_HOSTS says), no HTTPS redirect (the probe speaks plain
HTTP inside the host), no sign-in. They reveal nothing sensitive: /healthz says "ok"; /readyz names each
check, ok or fail and its time in ms (never a host name, version, path or error text: those go to the
log); /metrics is off until METRICS_TOKEN or METRICS_ALLOWED_NETWORKS is set, and then answers only a
caller with the token (Authorization: Bearer) or, not through a proxy, from an allowed network.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from diagnostics.selectors.health import Check, inference_workers_check, readiness_checks
from diagnostics.services.operation_counters import UPLOAD_REFUSALS, counter_increment

HEALTHZ, READYZ, METRICS = "/healthz", "/readyz", "/metrics"
# An upload refused: too large, busy (decode budget) or throttled, AI backlog full (or database away), storage
# failed. Counted here, outermost, so that the 413 of the size-limit middleware is seen too.
REFUSALS = frozenset({413, 429, 503, 507})


class OperationsEndpointsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info.rstrip("/") or "/"
        if path == HEALTHZ:
            return _no_store(HttpResponse("ok\n", content_type="text/plain; charset=utf-8"))
        if path == READYZ:
            return readyz(request)
        if path == METRICS:
            return metrics(request)
        response = self.get_response(request)
        if request.method in ("POST", "PUT") and response.status_code in REFUSALS:
            counter_increment(name=UPLOAD_REFUSALS, label=str(response.status_code))
        return response


def _no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _as_dict(check: Check) -> dict[str, object]:
    body: dict[str, object] = {"ok": check.ok, "ms": check.ms}
    if check.note:
        body["note"] = check.note
    return body


def readyz(request: HttpRequest) -> HttpResponse:
    """200 when the database, Redis, storage and the active model are usable, else 503. Inference workers
    seen lately are reported too, without deciding readiness: the web serves pages and accepts uploads
    (which wait in the queue) without them, and taking it out of a load balancer would not bring one back."""
    checks = readiness_checks()
    ready = all(check.ok for check in checks)
    workers = inference_workers_check()
    body = {
        "status": "ready" if ready else "not ready",
        "checks": {check.name: _as_dict(check) for check in checks},
        "workers": {"inference_seen": int(workers.note or 0), "ok": workers.ok, "ms": workers.ms},
    }
    return _no_store(HttpResponse(json.dumps(body), status=200 if ready else 503, content_type="application/json"))


def metrics_allowed(request: HttpRequest) -> bool | None:
    """True: serve; False: refuse (403); None: metrics are not enabled (404)."""
    token, networks = settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS
    if not token and not networks:
        return None
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if token and header.startswith("Bearer ") and secrets.compare_digest(header[7:].strip(), token):
        return True
    if networks and "HTTP_X_FORWARDED_FOR" not in request.META:  # through a proxy the address is the proxy's
        try:
            address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
        except ValueError:
            return False
        return any(address in ipaddress.ip_network(network, strict=False) for network in networks)
    return False


def metrics(request: HttpRequest) -> HttpResponse:
    allowed = metrics_allowed(request)
    if allowed is None:
        return _no_store(HttpResponse("Not found.\n", status=404, content_type="text/plain; charset=utf-8"))
    if not allowed:
        return _no_store(HttpResponse("Forbidden.\n", status=403, content_type="text/plain; charset=utf-8"))
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from diagnostics.selectors.metrics import metrics_registry

    return _no_store(HttpResponse(generate_latest(metrics_registry()), content_type=CONTENT_TYPE_LATEST))
