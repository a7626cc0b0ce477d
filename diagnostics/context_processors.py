from django.conf import settings
from django.http import HttpRequest


def intended_use(request: HttpRequest) -> dict[str, str]:
    return {"INTENDED_USE": settings.INTENDED_USE}
