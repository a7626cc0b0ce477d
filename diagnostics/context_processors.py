from django.conf import settings
from django.http import HttpRequest


def intended_use(request: HttpRequest) -> dict[str, object]:
    return {"INTENDED_USE": settings.INTENDED_USE, "SESSION_IDLE_SECONDS": settings.SESSION_COOKIE_AGE}
