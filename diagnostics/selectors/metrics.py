"""The numbers operations watch, in Prometheus' text format, computed when /metrics is scraped.

Nothing is counted inside a web or worker process: every number comes from the database, Redis (queue
lengths, worker heartbeats, the upload-refusal counters of services/operation_counters.py) at scrape time,
so any gunicorn worker of any web host answers the same, whatever process did the work. Histograms are
computed from the rows (every finished study, every primary prediction): cumulative, as Prometheus expects,
so `rate()` and `histogram_quantile()` work on them as on a counter-backed histogram.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Iterator
from typing import Any

from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.utils import timezone
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from diagnostics.models import PacsDelivery, Prediction, Study, WebhookDelivery
from diagnostics.services.operation_counters import UPLOAD_REFUSALS, counter_read
from worker.queues import INFERENCE, MAINTENANCE, TRAINING

from .health import broker_client, worker_heartbeats

# Seconds from an accepted upload to its result: the target is seconds, a backlog shows as minutes.
LATENCY_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900)
# Model time per film, seconds (ONNX on a CPU: about 0.05-0.3 s; a GPU: a few ms).
MODEL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
QUEUES = (INFERENCE, MAINTENANCE, TRAINING)
# kombu's Redis transport keeps a queue's messages of priority n under "<queue>\x06\x16<n>".
PRIORITY_SEPARATOR = "\x06\x16"


def metrics_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PortalCollector())
    return registry


class PortalCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        yield _studies_by_status()
        yield _latency_histogram()
        yield _model_time_histogram()
        yield from _gate()
        yield from _deliveries()
        yield _upload_refusals()
        yield from _redis_metrics()


def _studies_by_status() -> Metric:
    family = GaugeMetricFamily("portal_studies", "Studies by status.", labels=["status"])
    counts = dict(Study.objects.values_list("status").annotate(n=Count("pk")).values_list("status", "n"))
    for status in Study.Status.values:
        family.add_metric([status], counts.get(status, 0))
    return family


def _histogram(
    name: str, documentation: str, rows: Any, value: Any, buckets: Iterable[float], *, to_seconds: Any
) -> Metric:
    """A histogram of `value` (an expression) over `rows`, counted by the database in one query."""
    bounds = list(buckets)
    aggregates = {f"le_{i}": Count("pk", filter=Q(_v__lte=to_seconds(bound))) for i, bound in enumerate(bounds)}
    totals = rows.annotate(_v=value).aggregate(n=Count("pk"), total=Sum("_v"), **aggregates)
    total = totals["total"]
    seconds = total.total_seconds() if isinstance(total, dt.timedelta) else (total or 0) / 1000
    family = HistogramMetricFamily(name, documentation)
    family.add_metric(
        [],
        [(floatToGoString(bound), totals[f"le_{i}"]) for i, bound in enumerate(bounds)] + [("+Inf", totals["n"])],
        sum_value=seconds,
    )
    return family


def _latency_histogram() -> Metric:
    finished = Study.objects.filter(status__in=[Study.Status.DONE, Study.Status.FAILED])
    return _histogram(
        "portal_study_accept_to_result_seconds",
        "From a study accepted (upload, API or DICOM) to its result (done or failed).",
        finished,
        ExpressionWrapper(F("status_changed_at") - F("created_at"), output_field=DurationField()),
        LATENCY_BUCKETS,
        to_seconds=lambda bound: dt.timedelta(seconds=bound),
    )


def _model_time_histogram() -> Metric:
    return _histogram(
        "portal_model_seconds_per_film",
        "The model's time per film (decode, gate and ONNX call), primary predictions.",
        Prediction.objects.filter(role=Prediction.Role.PRIMARY),
        F("latency_ms"),
        MODEL_BUCKETS,
        to_seconds=lambda bound: bound * 1000,  # latency_ms is in milliseconds
    )


def _gate() -> Iterator[Metric]:
    primary = Prediction.objects.filter(role=Prediction.Role.PRIMARY)
    films = CounterMetricFamily(
        "portal_films_assessed",
        "Films assessed by the active model, by outcome (not_analysable: the input gate refused it).",
        labels=["outcome"],
    )
    counts = dict(primary.values_list("outcome").annotate(n=Count("pk")).values_list("outcome", "n"))
    for outcome in Prediction.Outcome.values:
        films.add_metric([outcome], counts.get(outcome, 0))
    yield films
    since = timezone.now() - dt.timedelta(hours=24)
    day = primary.filter(created_at__gte=since).aggregate(
        n=Count("pk"), refused=Count("pk", filter=Q(outcome=Prediction.Outcome.NOT_ANALYSABLE))
    )
    yield GaugeMetricFamily(
        "portal_gate_refusal_ratio_24h",
        "Share of the last 24 hours' films the input gate refused (0 when none were assessed).",
        value=day["refused"] / day["n"] if day["n"] else 0.0,
    )


def _deliveries() -> Iterator[Metric]:
    for name, model, what in (
        ("portal_webhook_deliveries", WebhookDelivery, "Webhook notifications"),
        ("portal_pacs_deliveries", PacsDelivery, "DICOM results sent to PACSes"),
    ):
        family = GaugeMetricFamily(name, f"{what} by status (failed: every retry spent).", labels=["status"])
        counts = dict(model.objects.values_list("status").annotate(n=Count("pk")).values_list("status", "n"))
        for status in model.Status.values:
            family.add_metric([status], counts.get(status, 0))
        yield family


def _upload_refusals() -> Metric:
    family = CounterMetricFamily(
        "portal_upload_refusals",
        "Uploads (POST/PUT) refused: 413 too large, 429 busy or throttled, 503 AI backlog full or database away, "
        "507 storage unavailable.",
        labels=["status"],
    )
    counts = counter_read(name=UPLOAD_REFUSALS)
    for status in ("413", "429", "503", "507"):
        family.add_metric([status], counts.get(status, 0))
    return family


def _redis_metrics() -> Iterator[Metric]:
    depth = GaugeMetricFamily(
        "portal_queue_depth", "Messages waiting in each Celery queue (Redis LLEN).", labels=["queue"]
    )
    client = broker_client()
    if client is not None:
        try:
            for queue in QUEUES:
                keys = [queue] + [f"{queue}{PRIORITY_SEPARATOR}{n}" for n in range(1, 10)]
                depth.add_metric([queue], sum(client.llen(key) for key in keys))
        finally:
            client.close()
    yield depth
    age = GaugeMetricFamily(
        "portal_worker_heartbeat_age_seconds", "Seconds since each Celery worker's last heartbeat.", labels=["worker"]
    )
    seen = GaugeMetricFamily(
        "portal_workers_seen",
        "Workers consuming each queue heard from within WORKER_HEARTBEAT_STALE_SECONDS.",
        labels=["queue"],
    )
    now = time.time()
    per_queue = dict.fromkeys(QUEUES, 0)
    for node, beat in sorted(worker_heartbeats().items()):
        seconds = max(0.0, now - float(beat.get("at", 0)))
        age.add_metric([node], round(seconds, 1))
        for queue in beat.get("queues", []):
            if seconds <= settings.WORKER_HEARTBEAT_STALE_SECONDS and queue in per_queue:
                per_queue[queue] += 1
    for queue, count in per_queue.items():
        seen.add_metric([queue], count)
    yield age
    yield seen
