"""Response headers that keep patient data out of caches and pages free of injected script.

- ``Content-Security-Policy``: scripts only from this site's own files (the templates have no
  inline script or event handler), no plugins, no framing, forms post only here. Inline ``style``
  attributes stay allowed (a few bars and widths are set that way); no script can be.
- ``Cache-Control: no-store`` on every answer to a signed-in user and on every API answer: pages
  and JSON carry patient data, which no browser or proxy cache may keep (Back then reloads the page
  instead of showing a cached fragment). Static files (served earlier by WhiteNoise) keep theirs.
- ``Vary: HX-Request``: the worklist answers htmx with a fragment and a browser with the whole page.
"""

from __future__ import annotations

from collections.abc import Callable

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


class SecurityHeadersMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        user = getattr(request, "user", None)
        if request.path.startswith("/api/") or (user is not None and user.is_authenticated):
            response["Cache-Control"] = "no-store, private"
        # htmx asks for a fragment of the same URL: a cache must never answer one with the other.
        patch_vary_headers(response, ("HX-Request",))
        return response
