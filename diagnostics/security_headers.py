"""Response headers that keep patient data out of caches and pages free of injected script.

- ``Content-Security-Policy``: scripts only from this site's own files (the templates have no
  inline script or event handler), no plugins, no framing, forms post only here (and sign-out goes on to
  the OpenID Connect provider where one is configured). Inline ``style``
  attributes stay allowed (a few bars and widths are set that way); no script can be. The one inline
  script that is needed, django-celery-beat's periodic-task form, runs by a nonce: each request gets a
  fresh one (``request.csp_nonce``), named in the header's script-src, and the overriding template
  (templates/admin/djcelery/change_periodictask_form.html) puts it on that script; an injected script
  cannot know it. Scripts never get 'unsafe-inline'.
- ``Cache-Control: no-store`` on every answer to a signed-in user and on every API answer: pages
  and JSON carry patient data, which no browser or proxy cache may keep (Back then reloads the page
  instead of showing a cached fragment). Static files (served earlier by WhiteNoise) keep theirs.
- ``Vary: HX-Request``: the worklist answers htmx with a fragment and a browser with the whole page.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_vary_headers

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


@functools.lru_cache(maxsize=4)
def content_security_policy(end_session_endpoint: str) -> str:
    """The policy, with the OpenID Connect provider's origin allowed as a form target: signing out (a form
    posted here) is redirected to the provider's end-session endpoint, which form-action also governs."""
    if not end_session_endpoint:
        return CONTENT_SECURITY_POLICY
    parts = urlsplit(end_session_endpoint)
    return CONTENT_SECURITY_POLICY.replace("form-action 'self'", f"form-action 'self' {parts.scheme}://{parts.netloc}")


def with_nonce(policy: str, nonce: str) -> str:
    """The policy with this response's nonce among the script sources."""
    return policy.replace("script-src 'self'", f"script-src 'self' 'nonce-{nonce}'", 1)


class SecurityHeadersMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        nonce = secrets.token_urlsafe(18)
        request.csp_nonce = nonce  # type: ignore[attr-defined]  # templates: {{ request.csp_nonce }}
        response = self.get_response(request)
        policy = content_security_policy(settings.OIDC_OP_END_SESSION_ENDPOINT)
        response.setdefault("Content-Security-Policy", with_nonce(policy, nonce))
        user = getattr(request, "user", None)
        if request.path.startswith("/api/") or (user is not None and user.is_authenticated):
            response["Cache-Control"] = "no-store, private"
        # htmx asks for a fragment of the same URL: a cache must never answer one with the other.
        patch_vary_headers(response, ("HX-Request",))
        return response
