"""Sign-in through the hospital's OpenID Connect provider (Entra ID, Keycloak, ADFS), with mozilla-django-oidc.

The authorization-code flow with PKCE (S256); the state is checked against the session (one use), the ID
token's nonce against the one sent, and the ID token's signature (the provider's JWKS), audience (our
client id), issuer (OIDC_ISSUER) and expiry are verified. The library checks all but audience and issuer,
which `_verify_jws` adds. Claims give the role and care team through directory.py, as LDAP groups do.
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn
from urllib.parse import urlencode

import jwt
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView

from diagnostics.models import User
from diagnostics.services.audit import audit_record

from .directory import DirectoryRefusal, directory_account_apply

logger = logging.getLogger(__name__)
CLOCK_SKEW_SECONDS = 60


def _refuse(reason: str) -> NoReturn:
    """Audited, and PermissionDenied: the library would log a SuspiciousOperation here and answer nothing."""
    audit_record(action="auth.oidc_refused", detail={"reason": reason[:300]})
    raise PermissionDenied(reason)


def _subject(claims: dict[str, Any]) -> str:
    return f"{settings.OIDC_ISSUER} {claims['sub']}"


class ProviderBackend(OIDCAuthenticationBackend):
    def authenticate(self, request: HttpRequest | None, **kwargs: Any) -> User | None:
        if request is None or "code" not in request.GET:
            return None  # a password sign-in: not ours
        try:
            return super().authenticate(request, **kwargs)
        except (SuspiciousOperation, requests.RequestException) as error:
            audit_record(action="auth.oidc_refused", detail={"reason": str(error)[:300]})
            logger.warning("OpenID Connect sign-in refused: %s", error)
            raise PermissionDenied(str(error)) from None

    def _verify_jws(self, payload: str, key: Any) -> dict[str, Any]:
        header = jwt.get_unverified_header(payload)
        if header.get("alg") != self.OIDC_RP_SIGN_ALGO:
            raise SuspiciousOperation(
                f"The ID token is signed with {header.get('alg')!r}, not {self.OIDC_RP_SIGN_ALGO}."
            )
        try:
            return jwt.decode(
                payload,
                key,
                algorithms=[self.OIDC_RP_SIGN_ALGO],
                audience=self.OIDC_RP_CLIENT_ID,
                issuer=settings.OIDC_ISSUER,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": ["exp", "iat", "aud", "iss", "sub"]},
            )
        except jwt.InvalidTokenError as error:
            raise SuspiciousOperation(f"ID token refused: {error}") from None

    def get_userinfo(self, access_token: str, id_token: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The ID token's claims with the userinfo endpoint's on top (the same subject, as OIDC requires)."""
        userinfo = super().get_userinfo(access_token, id_token, payload)
        if userinfo.get("sub") != payload.get("sub"):
            raise SuspiciousOperation("The userinfo endpoint answered for another subject than the ID token's.")
        return {**payload, **userinfo}

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        return bool(claims.get("sub")) and bool(claims.get(settings.OIDC_USERNAME_CLAIM))

    def filter_users_by_claims(self, claims: dict[str, Any]) -> QuerySet[User]:
        return User.objects.filter(directory=User.Directory.OIDC, directory_ref=_subject(claims))

    def create_user(self, claims: dict[str, Any]) -> User:
        username = str(claims[settings.OIDC_USERNAME_CLAIM])[:150]
        user = User.objects.filter(username__iexact=username).first() or User(username=username)
        if user.pk is not None and user.directory == User.Directory.OIDC:
            _refuse(f"Another provider account already signs in as {username!r}.")
        return self.update_user(user, claims)

    def update_user(self, user: User, claims: dict[str, Any]) -> User:
        groups = claims.get(settings.OIDC_GROUPS_CLAIM) or []
        if isinstance(groups, str):
            groups = [groups]
        for field, claim in (("email", "email"), ("first_name", "given_name"), ("last_name", "family_name")):
            if isinstance(claims.get(claim), str):
                setattr(user, field, claims[claim][:150])
        try:
            return directory_account_apply(user=user, source=User.Directory.OIDC, ref=_subject(claims), groups=groups)
        except DirectoryRefusal as refusal:
            _refuse(str(refusal))

    def get_or_create_user(self, access_token: str, id_token: str, payload: dict[str, Any]) -> User | None:
        # The library logs a refusal and answers None; the portal audits it and tells the person.
        user_info = self.get_userinfo(access_token, id_token, payload)
        if not self.verify_claims(user_info):
            raise SuspiciousOperation(f"The provider sent no 'sub' or {settings.OIDC_USERNAME_CLAIM!r} claim.")
        existing = self.filter_users_by_claims(user_info).first()
        return self.update_user(existing, user_info) if existing else self.create_user(user_info)

    def get_user(self, user_id: int) -> User | None:
        user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
        return user if isinstance(user, User) else None


class ProviderCallbackView(OIDCAuthenticationCallbackView):
    """The library's callback, with a wrong or replayed state audited and answered with the login page's
    message instead of a bare 400."""

    @property
    def failure_url(self) -> str:
        return reverse("login") + "?failed=oidc"

    def get(self, request: HttpRequest) -> HttpResponse:
        try:
            return super().get(request)
        except SuspiciousOperation as error:
            audit_record(action="auth.oidc_refused", detail={"reason": str(error)[:300]})
            return self.login_failure()


def provider_logout_url(request: HttpRequest) -> str:
    """Where signing out sends the browser: the provider's end-session endpoint for a provider session (its
    session ends too, RP-initiated logout), else the login page."""
    login = request.build_absolute_uri(reverse("login"))
    id_token = request.session.get("oidc_id_token")
    if not id_token or not settings.OIDC_OP_END_SESSION_ENDPOINT:
        return reverse("login")
    query = urlencode(
        {"id_token_hint": id_token, "post_logout_redirect_uri": login, "client_id": settings.OIDC_RP_CLIENT_ID}
    )
    return f"{settings.OIDC_OP_END_SESSION_ENDPOINT}?{query}"
