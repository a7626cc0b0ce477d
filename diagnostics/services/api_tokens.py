"""API tokens for machine clients: issued by admins, scoped to a care team, revocable.

Only the sha256 of a key is stored; the key itself is shown once, when it is
issued. A token acts as its user, an API client account whose team is the
token's team, so every selector limits it to that team exactly as for a clinician.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from diagnostics.models import ApiToken, CareTeam, User

from .audit import audit_record

KEY_PREFIX = "pdp_"
# A key is "pdp_" + 8 characters shown in lists (the prefix) + a 43-character secret.
_KEY_PATTERN = re.compile(r"^pdp_[A-Za-z0-9_-]{8}[A-Za-z0-9_-]{43}$")
# last_used_at is written at most this often per token, not on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class ApiTokenRejected(Exception):
    """The presented key cannot authenticate; the message is safe to show the client."""


@dataclass(frozen=True)
class IssuedApiToken:
    token: ApiToken
    key: str  # shown once; only its sha256 is stored


def api_token_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _require_admin(actor: User) -> None:
    if not actor.is_portal_admin:
        raise PermissionDenied("Only an administrator can manage API tokens.")


def _machine_user_for(*, name: str, team: CareTeam) -> User:
    base = slugify(name)[:100] or "client"
    user = User(username=f"api-{base}-{secrets.token_hex(4)}", role=User.Role.API_CLIENT, team=team)
    user.set_unusable_password()
    user.save()
    return user


def api_token_check_account(*, team: CareTeam, user: User) -> None:
    """A token's account must be an active API client of the token's team."""
    if user.role != User.Role.API_CLIENT or not user.is_active:
        raise ValidationError({"user_id": "A token can only be issued to an active API client account."})
    if user.team_id != team.pk:
        raise ValidationError({"user_id": "The API client account belongs to another care team."})


def api_token_issue(*, actor: User, name: str, team: CareTeam, user: User | None = None) -> IssuedApiToken:
    """Issue a token named `name` for `team`; the key is in the result and nowhere else.

    Without `user`, a new API client account is created in the team for the
    token. An existing `user` must be an active API client of that same team:
    a token never grants more than its account, and never another team's data.
    """
    _require_admin(actor)
    name = name.strip()
    if not name:
        raise ValidationError({"name": "Give the token a name that says which system uses it."})
    if user is not None:
        api_token_check_account(team=team, user=user)
    secret = secrets.token_urlsafe(32)  # 43 characters
    prefix = secrets.token_urlsafe(6)[:8]
    key = f"{KEY_PREFIX}{prefix}{secret}"
    with transaction.atomic():
        if user is None:
            user = _machine_user_for(name=name, team=team)
        token = ApiToken.objects.create(
            name=name[:100],
            user=user,
            team=team,
            prefix=prefix,
            key_sha256=api_token_hash(key),
            webhook_secret=secrets.token_hex(32),
            created_by=actor,
        )
        audit_record(
            action="api_token.issued",
            actor=actor,
            target=token,
            team_id=team.pk,
            detail={"name": token.name, "user": user.username, "prefix": prefix},
        )
    return IssuedApiToken(token=token, key=key)


def api_token_revoke(*, actor: User, token: ApiToken) -> ApiToken:
    """Revoke a token: from now on it answers 401. Revoking twice changes nothing."""
    _require_admin(actor)
    revoked_now = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    token.refresh_from_db(fields=["revoked_at"])
    if revoked_now:
        audit_record(
            action="api_token.revoked", actor=actor, target=token, team_id=token.team_id, detail={"name": token.name}
        )
    return token


def api_token_authenticate(*, key: str) -> ApiToken:
    """The live token for `key`, its use recorded; raises ApiTokenRejected otherwise."""
    if not _KEY_PATTERN.match(key):
        raise ApiTokenRejected("Invalid API token.")
    token = ApiToken.objects.select_related("user", "team").filter(key_sha256=api_token_hash(key)).first()
    if token is None:
        raise ApiTokenRejected("Invalid API token.")
    if token.revoked_at is not None:
        raise ApiTokenRejected("This API token has been revoked.")
    if not token.user.is_active:
        raise ApiTokenRejected("The account of this API token is disabled.")
    if token.user.team_id != token.team_id:
        # The account moved to another team after the token was issued: the token's scope no longer holds.
        raise ApiTokenRejected("This API token no longer matches its account's care team; ask for a new one.")
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


def api_token_signing_secret(*, user: User, token: ApiToken | None = None) -> str | None:
    """The webhook secret that signs a notification: the creating token's while it is live,
    else (studies from before tokens were recorded) the newest live token of `user`."""
    if token is not None:
        return token.webhook_secret if token.revoked_at is None else None
    token = (
        ApiToken.objects.filter(user=user, team_id=user.team_id, revoked_at__isnull=True)
        .order_by("-created_at", "-pk")
        .first()
    )
    return token.webhook_secret if token is not None else None
