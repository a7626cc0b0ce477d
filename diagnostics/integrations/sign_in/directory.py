"""Directory accounts: groups → role and care team, at sign-in and at each sync; deactivation.

A directory account (User.directory set) takes its role and care team from its groups at every sign-in:

- in one of the admin groups: a portal administrator (and Django staff, for the admin site);
- else in one of the clinician groups: a clinician, who must also be in a care-team group;
- else: refused, and an existing account is deactivated (it lost the portal).

Group names are compared case-insensitively (LDAP DNs are).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from diagnostics.models import CareTeam, User
from diagnostics.services.audit import audit_record


class DirectoryRefusal(Exception):
    """The directory says this person may not use the portal; the message is safe to show and audit."""


@dataclass(frozen=True)
class GroupMapping:
    admin_groups: frozenset[str]
    clinician_groups: frozenset[str]
    team_groups: Mapping[str, str]  # lower-cased group → care team name

    @classmethod
    def build(cls, *, admin: Iterable[str], clinician: Iterable[str], teams: Mapping[str, str]) -> GroupMapping:
        return cls(
            admin_groups=frozenset(g.strip().lower() for g in admin),
            clinician_groups=frozenset(g.strip().lower() for g in clinician),
            team_groups={g.strip().lower(): team for g, team in teams.items()},
        )

    @classmethod
    def for_source(cls, source: str) -> GroupMapping:
        if source == User.Directory.LDAP:
            return cls.build(
                admin=settings.LDAP_ADMIN_GROUPS,
                clinician=settings.LDAP_CLINICIAN_GROUPS,
                teams=settings.LDAP_TEAM_GROUPS,
            )
        return cls.build(
            admin=settings.OIDC_ADMIN_GROUPS, clinician=settings.OIDC_CLINICIAN_GROUPS, teams=settings.OIDC_TEAM_GROUPS
        )


@dataclass(frozen=True)
class Placement:
    role: str
    team_name: str | None


def directory_placement(*, groups: Iterable[str], mapping: GroupMapping) -> Placement:
    """The role and care team that `groups` give, or DirectoryRefusal."""
    member_of = {g.strip().lower() for g in groups}
    teams = sorted({mapping.team_groups[g] for g in member_of if g in mapping.team_groups})
    if len(teams) > 1:
        raise DirectoryRefusal(f"The directory puts this account in several care teams ({', '.join(teams)}).")
    team_name = teams[0] if teams else None
    if member_of & mapping.admin_groups:
        return Placement(role=User.Role.ADMIN, team_name=team_name)
    if member_of & mapping.clinician_groups:
        if team_name is None:
            raise DirectoryRefusal("The directory puts this clinician in no care team group.")
        return Placement(role=User.Role.CLINICIAN, team_name=team_name)
    raise DirectoryRefusal("The directory puts this account in none of the portal's groups.")


def directory_account_check_link(*, user: User, source: str) -> None:
    """A directory sign-in may take over a local account of the same name (a hospital moving its clinicians
    to the directory), never a local administrator: those are the break-glass accounts."""
    if user.pk is None or user.directory == source:
        return
    if user.directory or user.is_portal_admin or user.is_superuser or user.role == User.Role.API_CLIENT:
        raise DirectoryRefusal(f"A portal account named {user.username!r} exists that the directory may not take over.")


@transaction.atomic
def directory_account_apply(
    *, user: User, source: str, ref: str, groups: Iterable[str], created: bool | None = None
) -> User:
    """Create or update a directory account from its groups at sign-in (`user` may be unsaved; `created`
    says it is new when a library saved it first).

    Raises DirectoryRefusal (and deactivates an existing account) when the groups give no place.
    """
    created = user.pk is None if created is None else created
    directory_account_check_link(user=user, source=source)
    try:
        placement = directory_placement(groups=groups, mapping=GroupMapping.for_source(source))
    except DirectoryRefusal as refusal:
        if user.pk is not None and not created:
            directory_account_deactivate(user=user, reason=str(refusal))
        raise
    before = {"role": user.role, "team": user.team.name if user.team else None, "active": user.is_active}
    team = None
    if placement.team_name is not None:
        team, team_created = CareTeam.objects.get_or_create(name=placement.team_name)
        if team_created:
            audit_record(action="care_team.created", target=team, team_id=team.pk, detail={"source": source})
    user.directory = source
    user.directory_ref = ref
    user.role = placement.role
    user.team = team
    user.is_staff = placement.role == User.Role.ADMIN
    user.is_active = True
    if user.has_usable_password():
        user.set_unusable_password()  # the directory holds the password now
    user.save()
    after = {"role": user.role, "team": team.name if team else None, "active": True}
    if created:
        audit_record(
            action="auth.directory_account_created",
            actor=user,
            target=user,
            team_id=user.team_id,
            detail={"source": source, "ref": ref, **after},
        )
    elif before != after:
        audit_record(
            action="auth.directory_account_updated",
            actor=user,
            target=user,
            team_id=user.team_id,
            detail={"source": source, "before": before, "after": after},
        )
    return user


def directory_account_deactivate(*, user: User, reason: str) -> bool:
    """Deactivate a directory account: its sessions end at their next request and its API tokens are refused
    (api_token_authenticate checks the account). True if it was active."""
    changed = User.objects.filter(pk=user.pk, is_active=True).update(is_active=False)
    user.is_active = False
    if changed:
        audit_record(
            action="auth.directory_account_deactivated",
            target=user,
            team_id=user.team_id,
            detail={"source": user.directory, "ref": user.directory_ref, "reason": reason[:300]},
        )
    return bool(changed)
