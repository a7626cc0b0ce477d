from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from diagnostics.models import ApiToken, User

from .common import request_user


class MeOutputSerializer(serializers.Serializer):
    username = serializers.CharField()
    role = serializers.ChoiceField(choices=User.Role.choices)
    team_id = serializers.IntegerField(allow_null=True)
    team = serializers.CharField(allow_null=True)
    is_admin = serializers.BooleanField()
    token_name = serializers.CharField(allow_null=True, help_text="The API token used, if any.")
    token_prefix = serializers.CharField(allow_null=True)


class MeApi(APIView):
    @extend_schema(operation_id="me_retrieve", summary="Who you are authenticated as", responses=MeOutputSerializer)
    def get(self, request: Request) -> Response:
        user = request_user(request)
        token = request.auth if isinstance(request.auth, ApiToken) else None
        return Response(
            MeOutputSerializer(
                {
                    "username": user.username,
                    "role": user.role,
                    "team_id": user.team_id,
                    "team": user.team.name if user.team else None,
                    "is_admin": user.is_portal_admin,
                    "token_name": token.name if token else None,
                    "token_prefix": token.prefix if token else None,
                }
            ).data
        )
