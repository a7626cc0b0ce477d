"""One JSON shape for every API error: {"error": {"code", "message", "fields"}}.

`code` is stable and meant for programs; `message` is for people; `fields` maps a
request field to its messages (validation errors only). Clients can rely on the
shape for every status the API answers, including 404 for an unknown URL and 500.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, JsonResponse
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from diagnostics.database_unavailable import DATABASE_ERRORS, MESSAGE, RETRY_AFTER_SECONDS

logger = logging.getLogger(__name__)

NON_FIELD = "non_field_errors"

# The stable codes, by DRF exception class (most specific first).
_CODES: tuple[tuple[type[exceptions.APIException], str], ...] = (
    (exceptions.ValidationError, "validation_error"),
    (exceptions.ParseError, "malformed_request"),
    (exceptions.AuthenticationFailed, "authentication_failed"),
    (exceptions.NotAuthenticated, "not_authenticated"),
    (exceptions.PermissionDenied, "permission_denied"),
    (exceptions.NotFound, "not_found"),
    (exceptions.MethodNotAllowed, "method_not_allowed"),
    (exceptions.NotAcceptable, "not_acceptable"),
    (exceptions.UnsupportedMediaType, "unsupported_media_type"),
    (exceptions.Throttled, "throttled"),
)


class ApiError(exceptions.APIException):
    """An error with its own stable code, raised by views for cases DRF has no class for."""

    def __init__(self, *, status_code: int, code: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(detail=message, code=code)
        self.status_code = status_code
        self.error_code = code
        self.wait = retry_after  # DRF's handler answers it as Retry-After


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable machine-readable code, e.g. validation_error, not_found.")
    message = serializers.CharField(help_text="What went wrong, for a person.")
    # Declared fields are taken off the class by DRF's metaclass, so this does not hide Serializer.fields.
    fields = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Validation errors only: each request field with its messages.",
    )


class ErrorSerializer(serializers.Serializer):
    """The body of every error response."""

    error = ErrorBodySerializer()


def error_body(code: str, message: str, fields: dict[str, list[str]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    return {"error": body}


def _flatten(detail: Any) -> list[str]:
    if isinstance(detail, dict):
        return [message for value in detail.values() for message in _flatten(value)]
    if isinstance(detail, list):
        return [message for item in detail for message in _flatten(item)]
    return [str(detail)]


def _validation_fields(detail: Any) -> dict[str, list[str]]:
    if isinstance(detail, dict):
        return {str(field): _flatten(value) for field, value in detail.items()}
    return {NON_FIELD: _flatten(detail)}


def _validation_message(fields: dict[str, list[str]]) -> str:
    parts = [
        " ".join(messages) if field == NON_FIELD else f"{field}: {' '.join(messages)}"
        for field, messages in fields.items()
    ]
    return "; ".join(parts) or "The request is not valid."


def _as_drf_exception(exc: Exception) -> Exception:
    # Services raise Django's exceptions; give them DRF's status codes.
    if isinstance(exc, DjangoValidationError):
        detail: Any = exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        return exceptions.ValidationError(detail)
    if isinstance(exc, DjangoPermissionDenied):
        return exceptions.PermissionDenied(str(exc) or None)
    if isinstance(exc, Http404):
        return exceptions.NotFound(str(exc) or None)
    return exc


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF's EXCEPTION_HANDLER: every error, expected or not, in the documented shape."""
    if isinstance(exc, DATABASE_ERRORS):  # the database went away: a retry succeeds, nothing was stored
        logger.warning("Database unavailable in an API view: %s", exc)
        return Response(
            error_body("database_unavailable", MESSAGE),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    exc = _as_drf_exception(exc)
    response = drf_exception_handler(exc, context)
    if response is None:
        view = context.get("view")
        logger.exception("Unhandled error in %s", type(view).__name__ if view else "an API view", exc_info=exc)
        return Response(
            error_body("server_error", "The server could not complete the request; it has been logged."),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    assert isinstance(exc, exceptions.APIException)
    if isinstance(exc, exceptions.ValidationError):
        fields = _validation_fields(exc.detail)
        response.data = error_body("validation_error", _validation_message(fields), fields)
        return response
    code = getattr(exc, "error_code", None) or next((code for cls, code in _CODES if isinstance(exc, cls)), "error")
    response.data = error_body(code, " ".join(_flatten(exc.detail)))
    return response


@csrf_exempt  # it changes nothing; without this, a POST to a wrong path would get the CSRF failure page
def api_not_found(request: HttpRequest, unmatched: str = "") -> JsonResponse:
    """Any path under /api/v1/ that names no endpoint."""
    message = f"No API endpoint at {request.path}."
    if not request.path.endswith("/"):
        try:
            if resolve(request.path + "/").func is not api_not_found:
                message += f" Did you mean {request.path}/ (with the final slash)?"
        except Resolver404:
            pass
    return JsonResponse(error_body("not_found", message), status=404)
