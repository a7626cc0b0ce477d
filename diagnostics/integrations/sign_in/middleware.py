"""Two-factor sign-in enforced on every request: a signed-in person whose session has not passed a one-time
code (django_otp's OTPMiddleware, before this one, tells) sees only the sign-in pages until it does."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.urls import Resolver404, resolve, reverse

from diagnostics.models import User

from .two_factor import two_factor_enrolled, two_factor_required

# What a half-signed-in person may reach: the second step itself, signing out, and the sign-in callbacks.
OPEN_URL_NAMES = frozenset(
    {
        "login",
        "logout",
        "two_factor_verify",
        "two_factor_enrol",
        "oidc_authentication_init",
        "oidc_authentication_callback",
        "favicon",
    }
)


class TwoFactorRequiredMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = request.user
        if (
            isinstance(user, User)
            and user.is_authenticated
            and not user.is_verified()  # type: ignore[attr-defined]
            and not self._open(request)
            and two_factor_required(user)
        ):
            if request.path.startswith("/api/"):
                return JsonResponse(
                    {
                        "error": {
                            "code": "two_factor_required",
                            "fields": {},
                            "message": "Complete two-factor sign-in on the portal's pages first.",
                        }
                    },
                    status=403,
                )
            step = "two_factor_verify" if two_factor_enrolled(user) else "two_factor_enrol"
            return HttpResponseRedirect(f"{reverse(step)}?{urlencode({'next': request.get_full_path()})}")
        return self.get_response(request)

    @staticmethod
    def _open(request: HttpRequest) -> bool:
        if request.path.startswith("/static/"):
            return True
        try:
            return resolve(request.path_info).url_name in OPEN_URL_NAMES
        except Resolver404:
            return False
