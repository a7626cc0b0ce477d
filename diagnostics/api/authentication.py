"""Authentication of machine clients by ApiToken (`Authorization: Bearer <key>`)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from diagnostics.models import ApiToken, User
from diagnostics.services.api_tokens import ApiTokenRejected, api_token_authenticate

# "Token" is the keyword of the first API version; both name the same kind of key.
KEYWORDS = (b"bearer", b"token")


class ApiTokenAuthentication(BaseAuthentication):
    """The request acts as the token's API client account; `request.auth` is the ApiToken.

    A revoked, unknown or malformed token answers 401, never falls through to
    another scheme.
    """

    def authenticate(self, request: Request) -> tuple[User, ApiToken] | None:
        header = get_authorization_header(request).split()
        if not header or header[0].lower() not in KEYWORDS:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("The Authorization header must be 'Bearer <key>'.")
        try:
            key = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid API token.") from None
        try:
            token = api_token_authenticate(key=key)
        except ApiTokenRejected as rejection:
            raise exceptions.AuthenticationFailed(str(rejection)) from None
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        # Makes unauthenticated requests answer 401 (with this challenge) rather than 403.
        return 'Bearer realm="api"'


class ApiTokenAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = ApiTokenAuthentication
    name = "apiToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token an administrator issued: `Authorization: Bearer pdp_…`.",
        }
