"""Sign-in against the hospital's directory over LDAP (Active Directory, OpenLDAP), with django-auth-ldap.

The portal binds as its service account (LDAP_BIND_DN), finds the person's entry (LDAP_USER_FILTER under
LDAP_USER_BASE), refuses a disabled entry at once (LDAP_DISABLED_FILTER: the password is not even tried),
binds as the person to check the password, and reads their groups: directory.py turns those into a role
and a care team. Failed attempts count towards the same lockout (django-axes) as local accounts' and every
outcome is audited through the same signals.
"""

from __future__ import annotations

import logging
from typing import Any

import ldap
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django_auth_ldap.backend import LDAPBackend, _LDAPUser
from django_auth_ldap.config import LDAPSearch

from diagnostics.models import User
from diagnostics.services.audit import audit_record

from .directory import (
    DirectoryRefusal,
    GroupMapping,
    directory_account_apply,
    directory_account_check_link,
    directory_account_deactivate,
    directory_placement,
)

logger = logging.getLogger(__name__)


def entry_is_disabled(*, connection: Any, dn: str) -> bool:
    """Whether the directory marks the entry `dn` disabled (it matches LDAP_DISABLED_FILTER)."""
    results = LDAPSearch(dn, ldap.SCOPE_BASE, settings.LDAP_DISABLED_FILTER, ["1.1"]).execute(connection)
    return bool(results)


class DirectoryBackend(LDAPBackend):
    def authenticate_ldap_user(self, ldap_user: _LDAPUser, password: str) -> User | None:
        dn = ldap_user.dn  # the service account's search; None: the directory has no such person
        if dn is None:
            return None
        username = ldap_user._username
        if entry_is_disabled(connection=ldap_user.connection, dn=dn):
            existing = User.objects.filter(directory=User.Directory.LDAP, directory_ref__iexact=dn).first()
            if existing is not None:
                directory_account_deactivate(user=existing, reason="The directory has disabled this account.")
            audit_record(action="auth.directory_refused", detail={"username": username[:150], "reason": "disabled"})
            # PermissionDenied stops every later backend (no local fallback) and still fires
            # user_login_failed: audited, and counted by the lockout.
            raise PermissionDenied("The directory has disabled this account.")
        user = ldap_user.authenticate(password)  # binds as the person, then get_or_build_user
        if user is None:
            return None
        return directory_account_apply(
            user=user,
            source=User.Directory.LDAP,
            ref=dn,
            groups=ldap_user.group_dns,
            created=getattr(ldap_user, "portal_account_built", False),
        )

    def get_or_build_user(self, username: str, ldap_user: _LDAPUser) -> tuple[User, bool]:
        """The account already linked to this entry, else one of the same name, else a new one; refused
        (PermissionDenied, before django-auth-ldap saves anything) if it may not be linked or the groups
        give it no place in the portal."""
        user = User.objects.filter(directory=User.Directory.LDAP, directory_ref__iexact=ldap_user.dn).first()
        built = False
        if user is None:
            user, built = super().get_or_build_user(username, ldap_user)
        try:
            directory_account_check_link(user=user, source=User.Directory.LDAP)
            directory_placement(groups=ldap_user.group_dns, mapping=GroupMapping.for_source(User.Directory.LDAP))
        except DirectoryRefusal as refusal:
            if not built and user.directory == User.Directory.LDAP:
                directory_account_deactivate(user=user, reason=str(refusal))
            audit_record(action="auth.directory_refused", detail={"username": username[:150], "reason": str(refusal)})
            raise PermissionDenied(str(refusal)) from None
        ldap_user.portal_account_built = built
        return user, built

    def get_user(self, user_id: int) -> User | None:
        # A session ends at its next request once the account is deactivated (directory sync, refusal).
        user = super().get_user(user_id)
        return user if user is not None and user.is_active else None


def ldap_account_status(*, backend: DirectoryBackend, user: User) -> str | None:
    """Why the directory no longer lets `user` in (deleted, disabled, out of the portal's groups), or None."""
    ldap_user = _LDAPUser(backend, user=user)
    ldap_user._user_dn = user.directory_ref
    connection = ldap_user.connection
    if not LDAPSearch(user.directory_ref, ldap.SCOPE_BASE, "(objectClass=*)", ["1.1"]).execute(connection):
        return "The directory no longer has this account."
    if entry_is_disabled(connection=connection, dn=user.directory_ref):
        return "The directory has disabled this account."
    try:
        directory_placement(groups=ldap_user.group_dns, mapping=GroupMapping.for_source(User.Directory.LDAP))
    except DirectoryRefusal as refusal:
        return str(refusal)
    return None


def ldap_accounts_sync() -> dict[str, int]:
    """Ask the directory about every active LDAP account and deactivate those it no longer lets in.

    Run every LDAP_SYNC_SECONDS by beat (worker.tasks.sync_directory_accounts), so a token of an account
    the directory disabled stops within that time even if its owner never signs in again. A directory that
    cannot be reached changes nothing (logged; the next run tries again).
    """
    backend = DirectoryBackend()
    counts = {"checked": 0, "deactivated": 0}
    for user in User.objects.filter(directory=User.Directory.LDAP, is_active=True).order_by("pk"):
        try:
            reason = ldap_account_status(backend=backend, user=user)
        except ldap.LDAPError as error:
            logger.warning("Directory sync stopped: the directory did not answer (%s)", error)
            break
        counts["checked"] += 1
        if reason is not None and directory_account_deactivate(user=user, reason=reason):
            counts["deactivated"] += 1
    return counts
