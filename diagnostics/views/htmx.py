"""Small helpers for pages that htmx updates in place."""

from django.http import HttpRequest


def is_htmx(request: HttpRequest) -> bool:
    """A request htmx made (it wants a fragment, not a whole page); history restores want the page."""
    return request.headers.get("HX-Request") == "true" and request.headers.get("HX-History-Restore-Request") != "true"
