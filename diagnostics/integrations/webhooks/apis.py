"""The webhook a study's callback_url receives, declared in the schema as an OpenAPI callback, and the
API view listing a study's deliveries.

The body is built by services.py beside this module (`_study_payload`); these serializers only describe it,
so that a generated client has a model to parse what its receiver is sent.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiCallback, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from diagnostics.api.common import ListApi, request_user
from diagnostics.api.warnings import StudyWarningSerializer
from diagnostics.models import Prediction, Study, WebhookDelivery
from diagnostics.selectors import study_get_for_user

from .selectors import webhook_delivery_list_for_study
from .services import EVENT_STUDY_FINISHED, SIGNATURE_HEADER, TIMESTAMP_HEADER


class WebhookPredictionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    outcome = serializers.ChoiceField(choices=Prediction.Outcome.choices)
    label = serializers.ChoiceField(  # type: ignore[assignment]  # DRF stubs: Field.label is the title
        choices=Prediction.Label.choices, allow_null=True
    )
    probability = serializers.FloatField(allow_null=True, help_text="null when the film is not analysable.")
    threshold = serializers.FloatField()
    not_analysable_reason = serializers.CharField(allow_null=True)
    intended_use_warning = serializers.CharField(
        allow_null=True, help_text="This film's 'Outside intended use: …' or 'Age unknown: …' warning."
    )
    model_version = serializers.CharField(help_text="The model version's name.")


class WebhookImageSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    predictions = WebhookPredictionSerializer(many=True, help_text="Assessments shown to clinicians, newest first.")


class StudyFinishedEventSerializer(serializers.Serializer):
    """What the portal POSTs (JSON) to a study's callback_url once the study is done or failed."""

    event = serializers.ChoiceField(choices=[(EVENT_STUDY_FINISHED, "A study is done or failed")])
    study_id = serializers.IntegerField()
    patient_id = serializers.IntegerField()
    accession_number = serializers.CharField(allow_blank=True)
    status = serializers.ChoiceField(choices=Study.Status.choices, help_text="`done` or `failed`.")
    failure_reason = serializers.CharField(allow_blank=True, help_text="Why the study failed; empty when done.")
    no_result_reason = serializers.CharField(
        allow_null=True,
        help_text="Why a done study has no AI result (no film could be scored); null when it has one, or failed.",
    )
    warnings = StudyWarningSerializer(
        many=True, help_text="What the result must be read with (wrong patient, outside intended use, age unknown)."
    )
    finished_at = serializers.DateTimeField()
    status_path = serializers.CharField(help_text="The study's status URL, as a path (GET it for full detail).")
    images = WebhookImageSerializer(many=True)


def _header(name: str, description: str, enum: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", **({"enum": enum} if enum else {})}
    return {"in": "header", "name": name, "required": True, "schema": schema, "description": description}


# OpenAPI parameter objects: drf-spectacular's callbacks take no parameters (PortalAutoSchema adds these).
_HEADERS = [
    _header("X-Portal-Event", "What happened.", enum=[EVENT_STUDY_FINISHED]),
    _header("X-Portal-Delivery", "The delivery's id, the same on every retry of one notification: ignore repeats."),
    _header(TIMESTAMP_HEADER, "Unix seconds when this attempt was signed; refuse old ones."),
    _header(
        SIGNATURE_HEADER,
        '`sha256=<hex>`: HMAC-SHA256 of "<timestamp>." + the raw body under your token\'s webhook secret. '
        "Check it before trusting the body.",
    ),
]


class WebhookCallback(OpenApiCallback):
    """An OpenApiCallback whose request also declares headers (drf-spectacular's takes none):
    PortalAutoSchema._get_callbacks adds them."""

    def __init__(self, *, path: str) -> None:
        super().__init__(
            name="studyFinished",
            path=path,
            decorator=extend_schema(
                summary="The study is done or failed (signed webhook)",
                description="Sent once per outcome, retried with backoff until your server answers 2xx.",
                request=StudyFinishedEventSerializer,
                responses={
                    200: OpenApiResponse(
                        description="Any 2xx acknowledges; anything else, a redirect or no answer is retried."
                    )
                },
            ),
        )
        self.headers = _HEADERS


STUDY_FINISHED_FROM_BODY = WebhookCallback(path="{$request.body#/callback_url}")
STUDY_FINISHED_FROM_QUERY = WebhookCallback(path="{$request.query.callback_url}")


class WebhookDeliveryOutputSerializer(serializers.ModelSerializer):
    payload = serializers.JSONField(
        help_text="The JSON body sent: a StudyFinishedEvent (the studyFinished callback of studies_create)."
    )

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "url",
            "event",
            "status",
            "attempts",
            "last_response_code",
            "last_error",
            "payload",
            "created_at",
            "delivered_at",
        ]


class StudyWebhookDeliveryListApi(ListApi):
    output_serializer = WebhookDeliveryOutputSerializer

    @extend_schema(
        operation_id="studies_webhook_deliveries_list",
        summary="The notifications sent to the study's callback_url, with their attempts",
        responses=WebhookDeliveryOutputSerializer(many=True),
    )
    def get(self, request: Request, study_id: int) -> Response:
        study = study_get_for_user(user=request_user(request), study_id=study_id)
        return self.list_response(webhook_delivery_list_for_study(study=study))
