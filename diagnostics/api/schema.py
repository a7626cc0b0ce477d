"""OpenAPI generation: every operation documents the errors it can answer, in the one error shape,
with the response headers a client acts on; the schema must generate a usable client as it is
(tests/api/test_generated_client.py generates one with openapi-python-client and runs the workflow)."""

from __future__ import annotations

import copy
import inspect
from typing import Any

from drf_spectacular.openapi import AutoSchema
from rest_framework.permissions import AllowAny

from .errors import ErrorSerializer, error_body
from .permissions import IsPortalAdmin

_ERRORS: dict[str, tuple[str, str, str]] = {
    # status: (description, example code, example message)
    "400": ("The request is not valid.", "validation_error", "birth_date: Date has wrong format."),
    "401": ("No credentials, or an unknown or revoked token.", "authentication_failed", "Invalid API token."),
    "403": (
        "Authenticated, but not allowed (admin-only endpoint, or a missing CSRF token with a session).",
        "permission_denied",
        "Only an administrator can do this.",
    ),
    "404": (
        "No such record in your care team (another team's record answers the same).",
        "not_found",
        "No such study.",
    ),
    "415": ("The body's Content-Type is not one this endpoint accepts.", "unsupported_media_type", ""),
    "429": ("Too many requests from this client; retry after the Retry-After header.", "throttled", ""),
}

_ERROR_HEADERS: dict[str, dict[str, Any]] = {
    "401": {
        "WWW-Authenticate": {
            "description": "The scheme to authenticate with: `Bearer` (an API token).",
            "schema": {"type": "string"},
        }
    },
    "429": {
        "Retry-After": {
            "description": "Seconds to wait before the next request.",
            "schema": {"type": "integer", "minimum": 0},
            "required": True,
        }
    },
}

_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


class PortalAutoSchema(AutoSchema):
    """Adds the error responses an operation can give, so clients (and schema fuzzers) know them all."""

    def get_description(self) -> str:  # type: ignore[override]
        # Only a view's own docstring describes its endpoint; an inherited one describes a base class.
        method = getattr(self.view, self.method.lower(), None)
        own = method.__doc__ if method is not None else None
        return inspect.cleandoc(own or type(self.view).__dict__.get("__doc__") or "")

    def _get_format_parameters(self) -> list[Any]:
        negotiation = getattr(self.view, "content_negotiation_class", None)
        if not getattr(negotiation, "uses_format_parameter", True):
            return []  # diagnostics/api/negotiation.py: ?format= is not offered there
        return super()._get_format_parameters()

    def _error_codes(self) -> list[str]:
        permissions = self.view.get_permissions()
        public = all(isinstance(permission, AllowAny) for permission in permissions)
        codes = [] if public else ["401", "429"]
        has_query = self.method == "GET" and (self._get_filter_parameters() or self._get_paginator())
        if self.method in _UNSAFE or has_query:
            codes.append("400")
        if not public and (self.method in _UNSAFE or any(isinstance(p, IsPortalAdmin) for p in permissions)):
            codes.append("403")
        if "{" in self.path:
            codes.append("404")
        if self.method in _UNSAFE and self.get_request_serializer() is not None:
            codes.append("415")
        # A view that checks its query itself (no filter backend to show it) names the errors that gives.
        codes += [code for code in getattr(self.view, "schema_extra_error_codes", ()) if code not in codes]
        return codes

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        error_ref = self.resolve_serializer(ErrorSerializer(), direction).ref
        # A view answering its errors in another shape (FHIR's OperationOutcome) names its media types and schema.
        own_errors: dict[str, dict[str, Any]] | None = getattr(self.view, "schema_error_content", None)
        for code in self._error_codes():
            if code in responses:
                continue
            description, error_code, message = _ERRORS[code]
            content = (
                {media: {"schema": schema} for media, schema in own_errors.items()}
                if own_errors
                else {
                    "application/json": {
                        "schema": error_ref,
                        "examples": {error_code: {"value": error_body(error_code, message or description)}},
                    }
                }
            )
            responses[code] = {
                "description": description,
                **({"headers": _ERROR_HEADERS[code]} if code in _ERROR_HEADERS else {}),
                "content": content,
            }
        return responses

    def _get_request_body(self, direction: Any = "request") -> dict[str, Any] | None:
        body = super()._get_request_body(direction)
        # A raw file body (application/dicom) is the whole request: generators must not make it optional.
        if body and all(media.get("schema", {}).get("format") == "binary" for media in body["content"].values()):
            body["required"] = True
        return body

    def _insert_field_validators(self, field: Any, schema: dict[str, Any]) -> None:
        super()._insert_field_validators(field, schema)
        # drf-spectacular offers a blank alternative to a formatted string (a URL that may be "") as
        # oneOf [formatted, maxLength 0]; "" matches both (format is an annotation), which oneOf forbids.
        if "oneOf" in schema and {"type": "string", "maxLength": 0} in schema["oneOf"]:
            schema["anyOf"] = schema.pop("oneOf")

    def _get_callbacks(self) -> dict[str, Any]:
        callbacks = super()._get_callbacks()
        # drf-spectacular's callbacks declare no parameters; a webhook's request has signed headers.
        for callback in self.get_callbacks():
            headers = getattr(callback, "headers", None)
            if not headers:
                continue
            for operation in callbacks[callback.name][callback.path].values():
                operation["parameters"] = copy.deepcopy(headers)
        return callbacks
