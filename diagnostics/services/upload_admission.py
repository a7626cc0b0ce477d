"""What the web processes take on: decoding per user, and studies waiting for the AI.

Decoding budget

Decoding a film is the costly part of an upload (up to MAX_DECODED_BYTES of pixels, about a second of a
core and 500 MB for the worst file a limit accepts). A web worker decodes one request at a time, so one
user posting twenty such files at once would hold every web worker for seconds and every other user's
page would wait behind them. Each user (a person or an API token's user) therefore has a budget of
decoded bytes in flight, UPLOAD_DECODE_BUDGET_BYTES, counted from the files' headers before anything is
decoded: an upload that would go over it is answered at once with "busy, retry after N seconds" (HTTP
429 with Retry-After) and nothing is stored. Ordinary films are far below it (a 2,000 x 1,700 JPEG is
3.4 MB), so bursts of uploads from an integration pass; one request alone is always admitted (its own
decode budget bounds it).

The counter lives in the cache the API throttles use (Redis in production, this process's memory in the
embedded mode). With Redis down the check fails open, as the throttles do. A counter left behind by a
killed process expires IN_FLIGHT_TTL_SECONDS after that user's last upload.

Backlog
A web process accepts an upload in about 20 ms of CPU, the inference worker needs several times that
per study, and both share the cores. Clients that upload without pause would fill the queue faster
than the worker empties it, and every upload accepted beyond what the worker can do takes CPU from the
worker itself (measured: 16.1 studies/s without the limit, 20.3 with it; python -m benchmarks.throughput). So when
INFERENCE_BACKLOG_LIMIT studies already wait for the AI, a new upload is answered 503 with Retry-After
and nothing is stored; films from a PACS are never refused here (the receiver has acknowledged them).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.base import BaseCache

from diagnostics.models import Study
from ml.serving.decode import decoded_bytes_estimate

logger = logging.getLogger(__name__)

IN_FLIGHT_TTL_SECONDS = 120
RETRY_AFTER_SECONDS = 2


class UploadsBusy(Exception):
    """The user's other uploads are still being decoded; nothing was stored. Retry after `retry_after` s."""

    def __init__(self, *, in_flight_mb: float) -> None:
        self.retry_after = RETRY_AFTER_SECONDS
        super().__init__(
            f"Your other uploads ({in_flight_mb:.0f} MB of image data) are still being processed. Nothing was "
            f"stored: please send this one again in {_seconds(self.retry_after)}."
        )


def upload_decode_cost(*, files: Sequence[tuple[str, bytes]], target_size: int) -> int:
    return sum(decoded_bytes_estimate(data, target_size=target_size) for _, data in files)


@contextmanager
def upload_admission(*, user_id: int, cost: int) -> Iterator[None]:
    """Hold `cost` bytes of the user's decode budget while the block runs; UploadsBusy if over it."""
    cache = caches["api_throttle"]
    key = f"upload-decode-in-flight:{user_id}"
    try:
        cache.add(key, 0, timeout=IN_FLIGHT_TTL_SECONDS)
        in_flight = cache.incr(key, cost)
        cache.touch(key, timeout=IN_FLIGHT_TTL_SECONDS)
    except Exception as error:  # noqa: BLE001 - Redis down: admit, as the rate limits do
        logger.warning("Upload admission not checked (cache unavailable): %s", error)
        yield
        return
    if in_flight > settings.UPLOAD_DECODE_BUDGET_BYTES and in_flight > cost:
        _release(cache, key, cost)
        raise UploadsBusy(in_flight_mb=(in_flight - cost) / 2**20)
    try:
        yield
    finally:
        _release(cache, key, cost)


def _release(cache: BaseCache, key: str, cost: int) -> None:
    try:
        cache.decr(key, cost)
    except ValueError:  # the key expired meanwhile: nothing left to give back
        pass
    except Exception as error:  # noqa: BLE001 - Redis down: the key expires on its own
        logger.warning("Upload admission not released (cache unavailable): %s", error)


class InferenceBacklogFull(Exception):
    """INFERENCE_BACKLOG_LIMIT studies already wait for the AI; nothing was stored."""

    def __init__(self, *, waiting: int) -> None:
        self.retry_after = BACKLOG_RETRY_AFTER_SECONDS
        super().__init__(
            f"{waiting} studies are waiting for the AI assessment, as many as this portal queues. Nothing was "
            f"stored: please send this study again in {_seconds(self.retry_after)}."
        )


BACKLOG_RETRY_AFTER_SECONDS = 1


def inference_backlog_check() -> None:
    """InferenceBacklogFull when the queue is at its limit (0: no limit). Counts at most `limit` rows."""
    limit = settings.INFERENCE_BACKLOG_LIMIT
    if limit <= 0:
        return
    waiting = Study.objects.filter(status=Study.Status.QUEUED).values("pk")[:limit].count()
    if waiting >= limit:
        raise InferenceBacklogFull(waiting=waiting)


def _seconds(count: int) -> str:
    return "1 second" if count == 1 else f"{count} seconds"
