from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from rest_framework.exceptions import ValidationError
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import ModelSerializer

from diagnostics.models import User
from diagnostics.services.audit import audit_read


@contextmanager
def service_errors(field: str | None = None) -> Iterator[None]:
    """Turn a service's Django ValidationError into a DRF 400 with the same messages.

    With `field`, messages that name no field are reported under it.
    """
    try:
        yield
    except DjangoValidationError as error:
        detail: Any = error.message_dict if hasattr(error, "error_dict") else error.messages
        if field is not None and not isinstance(detail, dict):
            detail = {field: detail}
        raise ValidationError(detail) from None


def request_user(request: Request) -> User:
    """The authenticated user of an API request (every endpoint requires authentication)."""
    assert isinstance(request.user, User), "endpoint reached without authentication"
    return request.user


class ListApi(GenericAPIView):
    """A paginated, filterable list of `output_serializer`'s model, optionally with a `filterset_class`.

    Subclasses give `select(user)`, which must start from an access-checked selector,
    or pass their queryset to `list_response` themselves.
    """

    output_serializer: type[ModelSerializer]

    def select(self, user: User) -> QuerySet[Any]:
        raise NotImplementedError

    def get_queryset(self) -> QuerySet[Any]:
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user, only the model matters
            model: Any = self.output_serializer.Meta.model
            return model.objects.none()
        return self.select(request_user(self.request))

    def list_response(self, queryset: QuerySet[Any]) -> Response:
        page = self.paginate_queryset(self.filter_queryset(queryset))
        user = request_user(self.request)
        model: Any = self.output_serializer.Meta.model
        # Every list of the team's records is a read of patient data: audited (services.audit.audit_read).
        audit_read(
            action=f"{model._meta.model_name}.listed",
            actor=user,
            team_id=user.team_id,
            detail={
                "via": "api",
                "path": self.request.path,
                "query": self.request.query_params.urlencode()[:500],
                "rows": len(page) if page is not None else 0,
            },  # fmt: skip
        )
        return self.get_paginated_response(self.output_serializer(page, many=True).data)


def location_header(description: str) -> Any:
    """The Location response header of a 202, for the schema (drf-spectacular declares response headers
    as OpenApiParameters with `response`)."""
    from drf_spectacular.types import OpenApiTypes
    from drf_spectacular.utils import OpenApiParameter

    return OpenApiParameter(
        "Location", OpenApiTypes.URI, OpenApiParameter.HEADER, response=[202], required=True, description=description
    )
