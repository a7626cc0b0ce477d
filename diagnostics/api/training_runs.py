"""Retraining, for administrators: start a run, follow its progress, cancel it."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from diagnostics.models import TrainingRun, User
from diagnostics.selectors import training_run_get, training_run_list
from diagnostics.services.training import training_run_cancel, training_run_start
from ml.training.config import ARCHITECTURE_NAMES

from .common import ListApi, location_header, request_user, service_errors
from .filters import TrainingRunFilter
from .permissions import IsPortalAdmin

ADMIN_ONLY = [IsAuthenticated, IsPortalAdmin]


class TrainingRunOutputSerializer(serializers.ModelSerializer):
    requested_by = serializers.CharField(source="requested_by.username", allow_null=True, default=None)
    model_versions = serializers.ManyRelatedField(
        child_relation=serializers.PrimaryKeyRelatedField(read_only=True),
        read_only=True,
        help_text="Model versions this run registered.",
    )

    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "status",
            "architecture",
            "trigger",
            "config",
            "progress",
            "cancel_requested",
            "device",
            "error",
            "data_summary",
            "requested_by",
            "model_versions",
            "created_at",
            "started_at",
            "finished_at",
        ]


class TrainingRunDetailOutputSerializer(TrainingRunOutputSerializer):
    class Meta(TrainingRunOutputSerializer.Meta):
        fields = [*TrainingRunOutputSerializer.Meta.fields, "log"]


class TrainingRunListStartApi(ListApi):
    permission_classes = ADMIN_ONLY
    filterset_class = TrainingRunFilter
    output_serializer = TrainingRunOutputSerializer

    @extend_schema_serializer(component_name="TrainingRunStart")
    class InputSerializer(serializers.Serializer):
        architecture = serializers.ChoiceField(choices=ARCHITECTURE_NAMES)
        config = serializers.DictField(
            required=False,
            default=dict,
            help_text="epochs, input_size, batch_size, weights (none|imagenet), stages (single|progressive), "
            "data_source (dataset|dataset+feedback), max_train_images, seed; omitted ones take defaults.",
        )

    def select(self, user: User) -> Any:
        return training_run_list()

    @extend_schema(
        operation_id="training_runs_list",
        summary="Training runs, newest first",
        responses=TrainingRunOutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        return self.list_response(self.get_queryset())

    @extend_schema(
        operation_id="training_runs_create",
        summary="Start a training run (queued for a training worker)",
        request=InputSerializer,
        parameters=[location_header("The run's URL, to poll for progress.")],
        responses={202: OpenApiResponse(TrainingRunOutputSerializer, description="Queued; poll the Location URL.")},
        examples=[
            OpenApiExample(
                "Fine-tune on dataset and feedback",
                value={
                    "architecture": "mobilenetv2",
                    "config": {"epochs": 5, "weights": "imagenet", "data_source": "dataset+feedback"},
                },
                request_only=True,
            )
        ],
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with service_errors():
            run = training_run_start(actor=request_user(request), trigger="api", **serializer.validated_data)
        location = reverse("api_training_run_detail", kwargs={"run_id": run.pk}, request=request)
        run = training_run_get(run_id=run.pk)
        return Response(
            TrainingRunOutputSerializer(run).data, status=status.HTTP_202_ACCEPTED, headers={"Location": location}
        )


class TrainingRunDetailApi(APIView):
    permission_classes = ADMIN_ONLY

    @extend_schema(
        operation_id="training_runs_retrieve",
        summary="One training run with its progress and log",
        responses=TrainingRunDetailOutputSerializer,
    )
    def get(self, request: Request, run_id: int) -> Response:
        return Response(TrainingRunDetailOutputSerializer(training_run_get(run_id=run_id)).data)


class TrainingRunCancelApi(APIView):
    permission_classes = ADMIN_ONLY

    @extend_schema(
        operation_id="training_runs_cancel",
        summary="Cancel a run: a queued one at once, a running one at its next progress report",
        request=None,
        responses=TrainingRunOutputSerializer,
    )
    def post(self, request: Request, run_id: int) -> Response:
        run = training_run_get(run_id=run_id)
        with service_errors():
            training_run_cancel(run=run, actor=request_user(request))
        return Response(TrainingRunOutputSerializer(training_run_get(run_id=run_id)).data)
