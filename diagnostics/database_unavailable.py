"""A database that is away answers 503 with Retry-After, never 500.

A connection cut in the middle of a request (PostgreSQL restarted, a failover, a backend terminated)
raises OperationalError or InterfaceError. Nothing is wrong with the request: sent again in a few
seconds, on a new connection, it succeeds (with the same Idempotency-Key, an upload is not stored
twice). Whatever the request had written rolled back with its transaction, files included
(services/stored_files.py). Three places answer it, so that no path answers 500:

- ``DatabaseUnavailableMiddleware.process_exception``: the pages (a view raised it);
- ``diagnostics.api.errors.api_exception_handler``: the API (DRF catches its views' exceptions first);
- ``server_error`` (handler500): what was raised outside a view, in another middleware.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import server_error as django_server_error

logger = logging.getLogger(__name__)

DATABASE_ERRORS = (OperationalError, InterfaceError)
RETRY_AFTER_SECONDS = 5
MESSAGE = "The database is unavailable for a moment. Nothing was saved; send the request again in a few seconds."


def database_unavailable_response(request: HttpRequest, error: BaseException) -> HttpResponse:
    logger.warning("Database unavailable during %s %s: %s", request.method, request.path, error)
    if request.path.startswith("/api/"):
        body = {"error": {"code": "database_unavailable", "message": MESSAGE}}
        response: HttpResponse = JsonResponse(body, status=503)
    else:
        response = HttpResponse(MESSAGE, status=503, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    response["Cache-Control"] = "no-store"
    return response


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, DATABASE_ERRORS):
            return database_unavailable_response(request, exception)
        return None


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: a database error raised outside a view is a 503 too; anything else is Django's 500."""
    error = sys.exc_info()[1]
    if isinstance(error, DATABASE_ERRORS):
        return database_unavailable_response(request, error)
    return django_server_error(request)
