"""Authentication events go to the audit log."""

from typing import Any

from axes.signals import user_locked_out
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from diagnostics.services.audit import audit_record


@receiver(user_logged_in)
def _audit_login(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    audit_record(action="auth.login", actor=user, team_id=user.team_id)


@receiver(user_logged_out)
def _audit_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is not None:
        audit_record(action="auth.logout", actor=user, team_id=user.team_id)


@receiver(user_login_failed)
def _audit_login_failed(sender: Any, credentials: Any, request: Any = None, **kwargs: Any) -> None:
    audit_record(action="auth.login_failed", detail={"username": str(credentials.get("username", ""))[:150]})


@receiver(user_locked_out)
def _audit_lockout(sender: Any, request: Any, username: Any = None, ip_address: Any = None, **kwargs: Any) -> None:
    audit_record(action="auth.locked_out", detail={"username": str(username or "")[:150], "ip": str(ip_address or "")})
