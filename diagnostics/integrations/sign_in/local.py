"""Local (portal) accounts: the embedded default's only sign-in, and the break-glass administrators'."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.http import HttpRequest

from diagnostics.models import User


class LocalAccountBackend(ModelBackend):
    """Django's password check on the portal's own accounts.

    Directory accounts never sign in here (their password is the directory's). Where the login page does
    not offer local sign-in (LOCAL_SIGN_IN_BREAK_GLASS_ONLY), only portal administrators do: the accounts kept
    for when the directory or the provider is down.
    """

    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> User | None:
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if not isinstance(user, User) or user.directory:
            return None
        if settings.LOCAL_SIGN_IN_BREAK_GLASS_ONLY and not user.is_portal_admin:
            return None
        return user

    def get_user(self, user_id: int) -> User | None:
        user = super().get_user(user_id)
        return user if isinstance(user, User) else None
