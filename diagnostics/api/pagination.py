"""`?limit=&offset=` pages of {count, next, previous, results}.

DRF's LimitOffsetPagination quietly replaces a limit it cannot use (0, -1, "ten") with the default
and caps one above the maximum; a client then believes it asked for something it did not get. Here
an unusable value is a 400 naming the parameter, and the schema states the default and the bounds.
"""

from __future__ import annotations

import re
from typing import Any

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request


class PortalPagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 200

    def get_limit(self, request: Request) -> int:
        return _query_int(request, self.limit_query_param, default=self.default_limit, low=1, high=self.max_limit)

    def get_offset(self, request: Request) -> int:
        return _query_int(request, self.offset_query_param, default=0, low=0, high=None)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": self.limit_query_param,
                "required": False,
                "in": "query",
                "description": f"Results per page: 1 to {self.max_limit}, {self.default_limit} when omitted.",
                "schema": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": self.max_limit,
                    "default": self.default_limit,
                },
            },
            {
                "name": self.offset_query_param,
                "required": False,
                "in": "query",
                "description": "How many results to skip (0 or more). Follow `next` rather than counting.",
                "schema": {"type": "integer", "minimum": 0, "default": 0},
            },
        ]


def _query_int(request: Request, name: str, *, default: int, low: int, high: int | None) -> int:
    values = request.query_params.getlist(name)
    if not values:
        return default
    if len(values) > 1:
        raise ValidationError({name: ["Give this parameter once."]})
    if not re.fullmatch(r"[+-]?[0-9]{1,9}", values[0].strip()):
        raise ValidationError({name: ["A whole number is required."]})
    value = int(values[0])
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"{low} or more"
        raise ValidationError({name: [f"Must be {bounds}; {value} is not."]})
    return value
