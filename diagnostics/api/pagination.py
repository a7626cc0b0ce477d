from rest_framework.pagination import LimitOffsetPagination


class PortalPagination(LimitOffsetPagination):
    """`?limit=&offset=`; answers {count, next, previous, results}."""

    default_limit = 50
    max_limit = 200
