from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from diagnostics.models import User


class IsPortalAdmin(BasePermission):
    """Administrators only (role admin or superuser); others get 403, anonymous 401."""

    message = "Only an administrator can do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.user, User) and request.user.is_portal_admin
