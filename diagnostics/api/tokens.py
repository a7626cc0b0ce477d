"""API tokens, for administrators: issue (the key is shown once), list, revoke."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from diagnostics.models import ApiToken, CareTeam, User
from diagnostics.selectors import api_token_get, api_token_list
from diagnostics.services.api_tokens import api_token_issue, api_token_revoke

from .common import ListApi, request_user, service_errors
from .filters import ApiTokenFilter
from .permissions import IsPortalAdmin

ADMIN_ONLY = [IsAuthenticated, IsPortalAdmin]


class ApiTokenOutputSerializer(serializers.ModelSerializer):
    team_id = serializers.IntegerField()
    team = serializers.CharField(source="team.name")
    user_id = serializers.IntegerField()
    username = serializers.CharField(source="user.username")
    created_by = serializers.CharField(source="created_by.username")
    revoked = serializers.SerializerMethodField()

    class Meta:
        model = ApiToken
        fields = [
            "id",
            "name",
            "prefix",
            "team_id",
            "team",
            "user_id",
            "username",
            "created_by",
            "created_at",
            "last_used_at",
            "revoked_at",
            "revoked",
        ]

    def get_revoked(self, token: ApiToken) -> bool:
        return token.revoked_at is not None


class IssuedApiTokenOutputSerializer(ApiTokenOutputSerializer):
    key = serializers.CharField(help_text="Shown only in this response: store it now.")
    webhook_secret = serializers.CharField(help_text="Verifies this client's webhook signatures (HMAC-SHA256).")

    class Meta(ApiTokenOutputSerializer.Meta):
        fields = [*ApiTokenOutputSerializer.Meta.fields, "key", "webhook_secret"]


class ApiTokenListIssueApi(ListApi):
    permission_classes = ADMIN_ONLY
    filterset_class = ApiTokenFilter
    output_serializer = ApiTokenOutputSerializer

    @extend_schema_serializer(component_name="ApiTokenIssue")
    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=100, help_text="Which system uses the token, e.g. 'RIS bridge'.")
        team_id = serializers.PrimaryKeyRelatedField(
            queryset=CareTeam.objects.all(), source="team", help_text="The care team whose records it may access."
        )
        user_id = serializers.PrimaryKeyRelatedField(
            queryset=get_user_model().objects.all(),
            source="user",
            required=False,
            allow_null=True,
            default=None,
            help_text="An existing API client account of that team; omitted: a new account is created.",
        )

    def select(self, user: User) -> Any:
        return api_token_list()

    @extend_schema(operation_id="api_tokens_list", summary="API tokens", responses=ApiTokenOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        return self.list_response(self.get_queryset())

    @extend_schema(
        operation_id="api_tokens_create",
        summary="Issue an API token for a care team (the key is shown once)",
        request=InputSerializer,
        responses={201: OpenApiResponse(IssuedApiTokenOutputSerializer)},
        examples=[OpenApiExample("Issue", value={"name": "RIS bridge", "team_id": 1}, request_only=True)],
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with service_errors():
            issued = api_token_issue(actor=request_user(request), **serializer.validated_data)
        token = api_token_get(token_id=issued.token.pk)
        body = {**ApiTokenOutputSerializer(token).data, "key": issued.key, "webhook_secret": token.webhook_secret}
        return Response(body, status=status.HTTP_201_CREATED)


class ApiTokenDetailApi(APIView):
    permission_classes = ADMIN_ONLY

    @extend_schema(
        operation_id="api_tokens_retrieve", summary="One API token (never its key)", responses=ApiTokenOutputSerializer
    )
    def get(self, request: Request, token_id: int) -> Response:
        return Response(ApiTokenOutputSerializer(api_token_get(token_id=token_id)).data)


class ApiTokenRevokeApi(APIView):
    permission_classes = ADMIN_ONLY

    @extend_schema(
        operation_id="api_tokens_revoke",
        summary="Revoke an API token: from now on it answers 401",
        request=None,
        responses=ApiTokenOutputSerializer,
    )
    def post(self, request: Request, token_id: int) -> Response:
        token = api_token_revoke(actor=request_user(request), token=api_token_get(token_id=token_id))
        return Response(ApiTokenOutputSerializer(token).data)
