"""The sign-in pages: the login page (the methods settings offer), two-factor enrolment and verification,
and the account's two-factor page."""

from __future__ import annotations

from typing import Any

import segno
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from diagnostics.http import AuthenticatedHttpRequest

from .two_factor import (
    recovery_codes_issue,
    totp_enrol_confirm,
    totp_enrol_start,
    two_factor_enrolled,
    two_factor_required_by_role,
    two_factor_reset,
    two_factor_verify,
)

ENROL_SESSION_KEY = "two_factor_enrol_device"


class LoginView(auth_views.LoginView):
    """Django's login, telling the page which methods to offer (SIGN_IN_METHODS)."""

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        methods = settings.SIGN_IN_METHODS
        context.update(
            sign_in_local="local" in methods,
            sign_in_ldap="ldap" in methods,
            sign_in_oidc="oidc" in methods,
            # A password form is always there: directory passwords, local accounts, break-glass admins.
            password_form_open="local" in methods or "ldap" in methods,
            oidc_provider_name=settings.OIDC_PROVIDER_NAME,
            oidc_failed=self.request.GET.get("failed") == "oidc",
        )
        return context


def _next_url(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return target
    return reverse(settings.LOGIN_REDIRECT_URL)


@login_required
@require_http_methods(["GET", "POST"])
def two_factor_verify_view(request: AuthenticatedHttpRequest) -> HttpResponse:
    user = request.user
    if not two_factor_enrolled(user):
        return HttpResponseRedirect(reverse("two_factor_enrol") + "?next=" + _next_url(request))
    error = ""
    if request.method == "POST":
        if two_factor_verify(request=request, user=user, token=request.POST.get("code", "")):
            return HttpResponseRedirect(_next_url(request))
        error = "That code is not right (or was used already). Try the code your app shows now."
    return render(request, "sign_in/two_factor_verify.html", {"error": error, "next": _next_url(request)})


@login_required
@require_http_methods(["GET", "POST"])
def two_factor_enrol_view(request: AuthenticatedHttpRequest) -> HttpResponse:
    user = request.user
    device = None
    device_id = request.session.get(ENROL_SESSION_KEY)
    if device_id is not None:
        device = TOTPDevice.objects.filter(pk=device_id, user=user, confirmed=False).first()
    if two_factor_enrolled(user) and not request.user.is_verified():  # type: ignore[attr-defined]
        # Replacing an authenticator takes a code from the current one first.
        return HttpResponseRedirect(reverse("two_factor_verify") + "?next=" + reverse("two_factor_enrol"))
    error = ""
    if request.method == "POST" and device is not None:
        codes = totp_enrol_confirm(request=request, user=user, device=device, token=request.POST.get("code", ""))
        if codes is not None:
            request.session.pop(ENROL_SESSION_KEY, None)
            return render(request, "sign_in/recovery_codes.html", {"codes": codes, "next": _next_url(request)})
        error = "That code is not right. Check the time on your phone and type the code the app shows now."
    if device is None:
        device = totp_enrol_start(user=user)
        request.session[ENROL_SESSION_KEY] = device.pk
    context = {
        "qr_svg": segno.make(device.config_url, error="m").svg_inline(scale=4, title="Authenticator QR code"),
        "secret": _base32_secret(device),
        "error": error,
        "required": two_factor_required_by_role(user),
        "next": _next_url(request),
    }
    return render(request, "sign_in/two_factor_enrol.html", context)


def _base32_secret(device: TOTPDevice) -> str:
    import base64

    secret = base64.b32encode(device.bin_key).decode().rstrip("=")
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


@login_required
def two_factor_settings_view(request: AuthenticatedHttpRequest) -> HttpResponse:
    user = request.user
    context = {
        "enrolled": two_factor_enrolled(user),
        "required": two_factor_required_by_role(user),
        "recovery_codes_left": StaticToken.objects.filter(device__user=user).count(),
    }
    return render(request, "sign_in/two_factor_settings.html", context)


@login_required
@require_POST
def two_factor_recovery_codes_view(request: AuthenticatedHttpRequest) -> HttpResponse:
    if not two_factor_enrolled(request.user):
        return HttpResponseRedirect(reverse("two_factor_settings"))
    codes = recovery_codes_issue(user=request.user)
    return render(request, "sign_in/recovery_codes.html", {"codes": codes, "next": reverse("two_factor_settings")})


@login_required
@require_POST
def two_factor_disable_view(request: AuthenticatedHttpRequest) -> HttpResponse:
    try:
        two_factor_reset(actor=request.user, user=request.user)
    except PermissionError as refusal:
        messages.error(request, str(refusal))
    else:
        messages.success(request, "Two-factor sign-in is off for your account.")
    return HttpResponseRedirect(reverse("two_factor_settings"))
