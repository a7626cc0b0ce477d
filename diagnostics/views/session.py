from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.views.decorators.http import require_POST

from diagnostics.http import AuthenticatedHttpRequest


@require_POST
@login_required
def keepalive(request: AuthenticatedHttpRequest) -> HttpResponse:
    """'Stay signed in': any request pushes the idle expiry forward (SESSION_SAVE_EVERY_REQUEST)."""
    return HttpResponse(status=204)
