"""OpenAPI generation: every operation documents the errors it can answer, in the one error shape."""

from __future__ import annotations

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

_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


class PortalAutoSchema(AutoSchema):
    """Adds the error responses an operation can give, so clients (and schema fuzzers) know them all."""

    def get_description(self) -> str:  # type: ignore[override]
        # Only a view's own docstring describes its endpoint; an inherited one describes a base class.
        method = getattr(self.view, self.method.lower(), None)
        own = method.__doc__ if method is not None else None
        return inspect.cleandoc(own or type(self.view).__dict__.get("__doc__") or "")

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
        return codes

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        error_ref = self.resolve_serializer(ErrorSerializer(), direction).ref
        for code in self._error_codes():
            if code in responses:
                continue
            description, error_code, message = _ERRORS[code]
            responses[code] = {
                "description": description,
                "content": {
                    "application/json": {
                        "schema": error_ref,
                        "examples": {
                            error_code: {"value": error_body(error_code, message or description)},
                        },
                    }
                },
            }
        return responses
