"""API tokens, for admins (the views check the caller)."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404

from diagnostics.models import (
    ApiToken,
)


def api_token_list() -> QuerySet[ApiToken]:
    return ApiToken.objects.select_related("user", "team", "created_by")


def api_token_get(*, token_id: int) -> ApiToken:
    try:
        return api_token_list().get(pk=token_id)
    except (ApiToken.DoesNotExist, ValueError, TypeError):
        raise Http404("No such API token.") from None
