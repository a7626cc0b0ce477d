"""Two-factor sign-in: a TOTP authenticator app (django-otp) and single-use recovery codes.

Required at every sign-in for the roles in TWO_FACTOR_REQUIRED_FOR (administrators by default), whatever the
first factor (local password, directory password, OpenID Connect); anyone who enrolled is asked too.
Enrolment, recovery codes, verification failures and resets are audited. Repeated wrong codes slow down
(django-otp's throttling doubles the wait after each failure).
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest
from django_otp import login as otp_login
from django_otp import user_has_device
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from diagnostics.models import User
from diagnostics.services.audit import audit_record

RECOVERY_DEVICE_NAME = "recovery codes"


def two_factor_required_by_role(user: User) -> bool:
    if user.is_portal_admin or user.is_staff:
        return "admin" in settings.TWO_FACTOR_REQUIRED_FOR
    return user.role == User.Role.CLINICIAN and "clinician" in settings.TWO_FACTOR_REQUIRED_FOR


def two_factor_enrolled(user: User) -> bool:
    return TOTPDevice.objects.filter(user=user, confirmed=True).exists()


def two_factor_required(user: User) -> bool:
    """Whether `user` must pass a one-time code before the portal serves them anything."""
    if user.role == User.Role.API_CLIENT and not user.is_staff:
        return False  # machine accounts sign in with tokens only
    return two_factor_required_by_role(user) or user_has_device(user, confirmed=True)


def totp_enrol_start(*, user: User) -> TOTPDevice:
    """A new, unconfirmed authenticator for `user` (any earlier unconfirmed one is dropped)."""
    TOTPDevice.objects.filter(user=user, confirmed=False).delete()
    return TOTPDevice.objects.create(user=user, name="authenticator app", confirmed=False)


@transaction.atomic
def totp_enrol_confirm(*, request: HttpRequest, user: User, device: TOTPDevice, token: str) -> list[str] | None:
    """Confirm the authenticator with a code it shows: it replaces any earlier one, the session counts as
    verified, and a fresh set of recovery codes is returned (shown once). None if the code is wrong."""
    if device.user_id != user.pk or device.confirmed or not device.verify_token(token.strip().replace(" ", "")):
        audit_record(action="two_factor.enrol_failed", actor=user, target=user, team_id=user.team_id)
        return None
    TOTPDevice.objects.filter(user=user).exclude(pk=device.pk).delete()
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    otp_login(request, device)
    audit_record(action="two_factor.enrolled", actor=user, target=user, team_id=user.team_id)
    return recovery_codes_issue(user=user)


@transaction.atomic
def recovery_codes_issue(*, user: User) -> list[str]:
    """A new set of single-use recovery codes; the old ones stop working."""
    StaticDevice.objects.filter(user=user).delete()
    device = StaticDevice.objects.create(user=user, name=RECOVERY_DEVICE_NAME, confirmed=True)
    codes = [StaticToken.random_token() for _ in range(settings.TWO_FACTOR_RECOVERY_CODES)]
    StaticToken.objects.bulk_create(StaticToken(device=device, token=code) for code in codes)
    audit_record(
        action="two_factor.recovery_codes_issued",
        actor=user,
        target=user,
        team_id=user.team_id,
        detail={"count": len(codes)},
    )
    return codes


def two_factor_verify(*, request: HttpRequest, user: User, token: str) -> bool:
    """Check a code from the authenticator or a recovery code; on success the session is verified."""
    token = token.strip().replace(" ", "")
    # A code of digits is the authenticator's, anything else a recovery code: a mistyped recovery code must
    # not count as a failure against the authenticator's throttle.
    kind = TOTPDevice if token.isdigit() else StaticDevice
    for device in kind.objects.filter(user=user, confirmed=True):
        if device.verify_is_allowed()[0] and device.verify_token(token):
            otp_login(request, device)
            used = "recovery code" if isinstance(device, StaticDevice) else "authenticator"
            audit_record(
                action="auth.two_factor_verified", actor=user, target=user, team_id=user.team_id, detail={"with": used}
            )
            return True
    audit_record(action="auth.two_factor_failed", actor=user, target=user, team_id=user.team_id)
    return False


@transaction.atomic
def two_factor_reset(*, actor: User, user: User) -> int:
    """Remove `user`'s authenticator and recovery codes (a lost phone): at the next sign-in they enrol again
    if their role requires it. Another person's reset is an administrator's; anyone may reset their own
    where their role does not require it."""
    if actor.pk != user.pk and not actor.is_portal_admin:
        raise PermissionError("Only an administrator can reset another person's two-factor sign-in.")
    if actor.pk == user.pk and two_factor_required_by_role(user):
        raise PermissionError("Your role requires two-factor sign-in: an administrator can reset it.")
    removed = TOTPDevice.objects.filter(user=user).delete()[0] + StaticDevice.objects.filter(user=user).delete()[0]
    audit_record(
        action="two_factor.reset", actor=actor, target=user, team_id=user.team_id, detail={"devices_removed": removed}
    )
    return removed
