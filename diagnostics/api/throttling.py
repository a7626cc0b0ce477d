"""Rate limits per client: per API token, per signed-in user, per address when anonymous.

Counters live in the "api_throttle" cache (Redis when configured), so every web
process shares them. Rates are read per request, so tests can change them.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.cache import caches
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from diagnostics.models import ApiToken

logger = logging.getLogger(__name__)


class _PortalThrottle(SimpleRateThrottle):
    def __init__(self) -> None:
        self.cache = caches["api_throttle"]
        super().__init__()

    def allow_request(self, request: Request, view: Any) -> bool:
        # Fail open: with the counters' store (Redis) down, reads and writes go on unthrottled
        # rather than every API call answering 500.
        try:
            return super().allow_request(request, view)
        except Exception:  # the cache backend raises its client's own errors
            logger.warning("Rate-limit counters unavailable: request allowed without throttling", exc_info=True)
            return True

    def get_rate(self) -> str | None:
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(self.scope or "")
        return str(rate) if rate is not None else None


class ClientRateThrottle(_PortalThrottle):
    scope = "client"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if isinstance(request.auth, ApiToken):
            # The random prefix makes the key unique to this token, even across databases.
            ident = f"token-{request.auth.pk}-{request.auth.prefix}"
        elif request.user and request.user.is_authenticated:
            ident = f"user-{request.user.pk}-{request.user.date_joined.timestamp():.0f}"
        else:
            return None
        return self.cache_format % {"scope": self.scope, "ident": ident}


class AnonymousRateThrottle(_PortalThrottle):
    scope = "anonymous"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if request.user and request.user.is_authenticated:
            return None
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
