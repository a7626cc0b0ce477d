"""Two-factor sign-in in tests: a confirmed authenticator for a user, and the code it shows now.

Tests that sign an administrator in with `force_login` get a session that also passed two-factor sign-in
(tests/conftest.py, `force_login_passes_two_factor`): the same marker django-otp leaves after a real
verification, for a real confirmed device. Production has no such path; two-factor sign-in itself is tested
through its pages (tests/integrations/sign_in/test_two_factor.py, the browser tests).
"""

from __future__ import annotations

import time

from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from diagnostics.models import User


def authenticator_for(user: User) -> TOTPDevice:
    device = TOTPDevice.objects.filter(user=user, confirmed=True).first()
    return device or TOTPDevice.objects.create(user=user, name="test authenticator", confirmed=True)


def authenticator_code(device: TOTPDevice) -> str:
    """The code an authenticator app would show, for a time step the device has not accepted yet (it refuses
    a code twice, so a second sign-in within 30 s takes the next step's, as the app would show it soon)."""
    device.refresh_from_db()
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    now = totp.t()
    if device.last_t >= now + device.tolerance:
        time.sleep(device.step * (device.last_t + 1 - now - device.tolerance) + 1)
        now = totp.t()
    totp.time = device.t0 + max(now, device.last_t + 1) * device.step
    return f"{totp.token():0{device.digits}d}"


def mark_client_verified(client, user: User) -> None:  # type: ignore[no-untyped-def]
    """Record in a test client's session that it passed two-factor sign-in with `user`'s authenticator."""
    from django_otp import DEVICE_ID_SESSION_KEY

    session = client.session
    session[DEVICE_ID_SESSION_KEY] = authenticator_for(user).persistent_id
    session.save()
