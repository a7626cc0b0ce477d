from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request

from diagnostics.models import User


@contextmanager
def service_errors() -> Iterator[None]:
    """Turn a service's Django ValidationError into a DRF 400 with the same messages."""
    try:
        yield
    except DjangoValidationError as error:
        detail: Any = error.message_dict if hasattr(error, "error_dict") else error.messages
        raise ValidationError(detail) from None



def request_user(request: Request) -> User:
    """The authenticated user of an API request (every endpoint requires authentication)."""
    assert isinstance(request.user, User), "endpoint reached without authentication"
    return request.user
