"""Model versions: readable by every user; promotion, rollback, archiving and shadowing by admins."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from diagnostics.models import ModelVersion, User
from diagnostics.selectors import model_version_get, model_version_list
from diagnostics.services import model_registry

from .common import ListApi, request_user, service_errors
from .filters import ModelVersionFilter
from .permissions import IsPortalAdmin


def _ci95() -> serializers.ListField:
    return serializers.ListField(
        child=serializers.FloatField(),
        min_length=2,
        max_length=2,
        allow_null=True,
        help_text="95 % interval: low, high.",
    )


class ExpectedAtOperatingPointSerializer(serializers.Serializer):
    sensitivity = serializers.FloatField(allow_null=True)
    sensitivity_ci95 = _ci95()
    specificity = serializers.FloatField(allow_null=True)
    specificity_ci95 = _ci95()


class OperatingPointSerializer(serializers.Serializer):
    threshold = serializers.FloatField(allow_null=True)
    rule = serializers.CharField(help_text="How the threshold was chosen, in words.")
    target_sensitivity = serializers.FloatField(allow_null=True)
    expected = ExpectedAtOperatingPointSerializer(
        help_text="Sensitivity and specificity expected at the threshold on films of a new period."
    )
    expected_method = serializers.CharField(help_text="How the expectation was measured, in words.")


class ModelVersionOutputSerializer(serializers.ModelSerializer):
    operating_point = OperatingPointSerializer(
        read_only=True,
        allow_null=True,
        help_text="The manifest's operating point, when it records one; null otherwise.",
    )
    probability_calibrated = serializers.BooleanField(
        source="score_is_probability",
        read_only=True,
        help_text="Whether this model's score is shown as a probability: the upper end of the 95 % interval of its "
        "cross-fitted expected calibration error on films of a new period is at most 0.05. Otherwise it is an AI "
        "score, not a calibrated probability.",
    )

    class Meta:
        model = ModelVersion
        fields = [
            "id", "name", "architecture", "status", "threshold", "preprocessing_version", "sha256", "metrics",
            "evaluation", "training_run", "created_at", "activated_at", "operating_point", "probability_calibrated",
        ]  # fmt: skip


class ModelVersionListApi(ListApi):
    filterset_class = ModelVersionFilter
    output_serializer = ModelVersionOutputSerializer

    def select(self, user: User) -> Any:
        return model_version_list()

    @extend_schema(
        operation_id="model_versions_list",
        summary="Registered model versions (the active one serves predictions)",
        responses=ModelVersionOutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        return self.list_response(self.get_queryset())


class ModelVersionDetailApi(APIView):
    @extend_schema(
        operation_id="model_versions_retrieve", summary="One model version", responses=ModelVersionOutputSerializer
    )
    def get(self, request: Request, model_version_id: int) -> Response:
        return Response(ModelVersionOutputSerializer(model_version_get(model_version_id=model_version_id)).data)


ADMIN_ONLY = [IsAuthenticated, IsPortalAdmin]


def _changed(model_version: ModelVersion) -> Response:
    model_version.refresh_from_db()
    return Response(ModelVersionOutputSerializer(model_version).data)


def _action_schema(operation_id: str, summary: str, description: str) -> Any:
    return extend_schema(
        operation_id=operation_id,
        summary=summary,
        description=description,
        request=None,
        responses={200: OpenApiResponse(ModelVersionOutputSerializer, description="The model version, changed.")},
    )


class ModelVersionPromoteApi(APIView):
    permission_classes = ADMIN_ONLY

    @_action_schema(
        "model_versions_promote",
        "Promote a candidate (or shadow) model to active, through the promotion gate",
        "Refuses (400, with every failed check in words) unless: the gate's evaluation set holds at least "
        "PROMOTION_MIN_EVALUATION_FILMS films (300 by default) of both classes, none the candidate trained on; the "
        "lower ends of the candidate's 95 % patient-level intervals meet the gate's own floors (sensitivity "
        "PROMOTION_MIN_SENSITIVITY, 0.90; ROC AUC PROMOTION_MIN_AUC, 0.92), whatever the active model does; and its "
        "sensitivity and ROC AUC are not worse than the active model's beyond the tolerances. Every verdict is "
        "audited with its checks.",
    )
    def post(self, request: Request, model_version_id: int) -> Response:
        model_version = model_version_get(model_version_id=model_version_id)
        with service_errors():
            model_registry.model_version_promote(model_version=model_version, actor=request_user(request))
        return _changed(model_version)


class ModelVersionRollbackApi(APIView):
    permission_classes = ADMIN_ONLY

    @_action_schema(
        "model_versions_rollback",
        "Roll back: make an earlier, once-active version active again",
        "No gate: the version already served. The current active model is archived; the audit log records who "
        "rolled back and the model replaced (the admin's page asks for confirmation and a reason).",
    )
    def post(self, request: Request, model_version_id: int) -> Response:
        model_version = model_version_get(model_version_id=model_version_id)
        with service_errors():
            model_registry.model_version_rollback(model_version=model_version, actor=request_user(request))
        return _changed(model_version)


class ModelVersionArchiveApi(APIView):
    permission_classes = ADMIN_ONLY

    @_action_schema("model_versions_archive", "Archive a model version", "The active model cannot be archived.")
    def post(self, request: Request, model_version_id: int) -> Response:
        model_version = model_version_get(model_version_id=model_version_id)
        with service_errors():
            model_registry.model_version_archive(model_version=model_version, actor=request_user(request))
        return _changed(model_version)


class ModelVersionShadowApi(APIView):
    permission_classes = ADMIN_ONLY

    @_action_schema(
        "model_versions_shadow",
        "Run a candidate in shadow mode",
        "It predicts on every new upload next to the active model; its results are stored for comparison and "
        "never shown to clinicians or API clients.",
    )
    def post(self, request: Request, model_version_id: int) -> Response:
        model_version = model_version_get(model_version_id=model_version_id)
        with service_errors():
            model_registry.model_version_set_shadow(model_version=model_version, actor=request_user(request))
        return _changed(model_version)
