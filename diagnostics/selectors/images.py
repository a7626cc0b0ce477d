"""One film of a care team's study."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from django.http import Http404

from diagnostics.models import (
    Image,
    User,
)


def image_get_for_user(*, user: User | AnonymousUser, image_id: int) -> Image:
    if not user.is_authenticated or user.team_id is None:
        raise Http404("No such image.")
    try:
        return Image.objects.select_related("study__patient").get(pk=image_id, study__patient__team_id=user.team_id)
    except (Image.DoesNotExist, ValueError, TypeError):
        raise Http404("No such image.") from None
