"""AI assessments shown to clinicians (never shadow ones), the feedback that confirms or corrects them and
the acknowledgements ("seen: no AI result") of films the AI could not assess."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from diagnostics.models import Acknowledgement, Feedback, Prediction, User
from diagnostics.selectors import (
    acknowledgement_list_for_prediction,
    acknowledgement_list_for_study,
    feedback_list_for_prediction,
    prediction_get_for_user,
    prediction_list_for_user,
    study_get_for_user,
)
from diagnostics.services.audit import audit_read
from diagnostics.services.feedback import acknowledgement_record, feedback_record, study_acknowledge_no_ai_result

from .common import ListApi, request_user, service_errors
from .filters import PredictionFilter
from .studies import PredictionOutputSerializer


class PredictionDetailOutputSerializer(PredictionOutputSerializer):
    image_id = serializers.IntegerField()
    study_id = serializers.IntegerField(source="image.study_id")
    patient_id = serializers.IntegerField(source="image.study.patient_id")

    class Meta(PredictionOutputSerializer.Meta):
        fields = ["image_id", "study_id", "patient_id", *PredictionOutputSerializer.Meta.fields]


class FeedbackOutputSerializer(serializers.ModelSerializer):
    prediction_id = serializers.IntegerField()
    clinician = serializers.CharField(source="clinician.username")

    class Meta:
        model = Feedback
        fields = ["id", "prediction_id", "clinician", "agrees", "confirmed_label", "subtype", "comment", "created_at"]


class AcknowledgementOutputSerializer(serializers.ModelSerializer):
    study_id = serializers.IntegerField()
    prediction_id = serializers.IntegerField(
        allow_null=True,
        help_text="The refused film's assessment; null when the study as a whole was seen (its analysis failed "
        "or left it without any scored film).",
    )
    clinician = serializers.CharField(source="clinician.username")

    class Meta:
        model = Acknowledgement
        fields = ["id", "study_id", "prediction_id", "clinician", "comment", "created_at"]


class PredictionListApi(ListApi):
    filterset_class = PredictionFilter
    output_serializer = PredictionDetailOutputSerializer

    def select(self, user: User) -> Any:
        return prediction_list_for_user(user=user)

    @extend_schema(
        operation_id="predictions_list",
        summary="Your team's AI assessments",
        responses=PredictionDetailOutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        return self.list_response(self.get_queryset())


class PredictionDetailApi(APIView):
    @extend_schema(
        operation_id="predictions_retrieve", summary="One AI assessment", responses=PredictionDetailOutputSerializer
    )
    def get(self, request: Request, prediction_id: int) -> Response:
        user = request_user(request)
        prediction = prediction_get_for_user(user=user, prediction_id=prediction_id)
        audit_read(
            action="prediction.viewed", actor=user, target=prediction, team_id=user.team_id, detail={"via": "api"}
        )
        return Response(PredictionDetailOutputSerializer(prediction).data)


class PredictionFeedbackApi(ListApi):
    output_serializer = FeedbackOutputSerializer

    @extend_schema_serializer(component_name="FeedbackCreate")
    class InputSerializer(serializers.Serializer):
        agrees = serializers.BooleanField(help_text="true: confirm the AI's label; false: correct it.")
        confirmed_label = serializers.ChoiceField(
            choices=Prediction.Label.choices,
            required=False,
            allow_null=True,
            default=None,
            help_text="Required when correcting: the other label. Optional when agreeing.",
        )
        subtype = serializers.ChoiceField(
            choices=Feedback.Subtype.choices, required=False, default="", allow_blank=True
        )
        comment = serializers.CharField(required=False, default="", allow_blank=True, max_length=2000)

    @extend_schema(
        operation_id="predictions_feedback_list",
        summary="Feedback on an assessment, newest (the current verdict) first",
        responses=FeedbackOutputSerializer(many=True),
    )
    def get(self, request: Request, prediction_id: int) -> Response:
        prediction = prediction_get_for_user(user=request_user(request), prediction_id=prediction_id)
        return self.list_response(feedback_list_for_prediction(prediction=prediction))

    @extend_schema(
        operation_id="predictions_feedback_create",
        summary="Confirm or correct an assessment",
        request=InputSerializer,
        responses={201: FeedbackOutputSerializer},
        examples=[
            OpenApiExample("Confirm", value={"agrees": True}, request_only=True),
            OpenApiExample(
                "Correct",
                value={"agrees": False, "confirmed_label": "PNEUMONIA", "subtype": "viral", "comment": "RLL opacity"},
                request_only=True,
            ),
        ],
    )
    def post(self, request: Request, prediction_id: int) -> Response:
        user = request_user(request)
        prediction = prediction_get_for_user(user=user, prediction_id=prediction_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with service_errors():
            feedback = feedback_record(user=user, prediction=prediction, **serializer.validated_data)
        return Response(FeedbackOutputSerializer(feedback).data, status=status.HTTP_201_CREATED)


@extend_schema_serializer(component_name="AcknowledgementCreate")
class AcknowledgementInputSerializer(serializers.Serializer):
    comment = serializers.CharField(required=False, default="", allow_blank=True, max_length=2000)


class AcknowledgementApi(ListApi):
    """What the acknowledgements of a film and of a study share: the comment they take and their answer."""

    output_serializer = AcknowledgementOutputSerializer
    InputSerializer: type[serializers.Serializer] = AcknowledgementInputSerializer

    def acknowledge(self, request: Request, record: Callable[..., Any], *, many: bool = False) -> Response:
        """201 with what `record(comment=...)` acknowledged; a service's ValidationError is a 400."""
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with service_errors():
            acknowledged = record(**serializer.validated_data)
        return Response(AcknowledgementOutputSerializer(acknowledged, many=many).data, status=status.HTTP_201_CREATED)


class PredictionAcknowledgementApi(AcknowledgementApi):
    """'Seen: no AI result' on a film the input gate refused: such a film has no label to confirm or
    correct, so this is how its study is read (the study's `read` and the `reading` filter count it)."""

    @extend_schema(
        operation_id="predictions_acknowledgements_list",
        summary="Acknowledgements of a not-analysable assessment, newest first",
        responses=AcknowledgementOutputSerializer(many=True),
    )
    def get(self, request: Request, prediction_id: int) -> Response:
        prediction = prediction_get_for_user(user=request_user(request), prediction_id=prediction_id)
        return self.list_response(acknowledgement_list_for_prediction(prediction=prediction))

    @extend_schema(
        operation_id="predictions_acknowledgements_create",
        summary="Record that a clinician has seen a film the AI could not assess",
        description="Only for an assessment whose `outcome` is `not_analysable`; a scored assessment is read "
        "with feedback (400 otherwise).",
        request=AcknowledgementInputSerializer,
        responses={201: AcknowledgementOutputSerializer},
        examples=[OpenApiExample("Seen", value={"comment": "Rotated film, read by hand"}, request_only=True)],
    )
    def post(self, request: Request, prediction_id: int) -> Response:
        user = request_user(request)
        prediction = prediction_get_for_user(user=user, prediction_id=prediction_id)
        return self.acknowledge(request, partial(acknowledgement_record, user=user, prediction=prediction))


@extend_schema_serializer(component_name="StudyAcknowledgementCreate")
class StudyAcknowledgementInputSerializer(AcknowledgementInputSerializer):
    """The same comment under the study endpoint's own schema name (the published schema stays as it was)."""


class StudyAcknowledgementApi(AcknowledgementApi):
    """'Seen: no AI result' on a study with nothing the AI scored: each film the input gate refused, or the
    study itself when its analysis failed or left a film without any assessment. Such a study has no label
    to confirm or correct, so this is how it is read (the study's `read` and the `reading` filter count it)."""

    InputSerializer = StudyAcknowledgementInputSerializer

    @extend_schema(
        operation_id="studies_acknowledgements_list",
        summary="Acknowledgements of a study with no AI result (its films' and its own), newest first",
        responses=AcknowledgementOutputSerializer(many=True),
    )
    def get(self, request: Request, study_id: int) -> Response:
        study = study_get_for_user(user=request_user(request), study_id=study_id)
        return self.list_response(acknowledgement_list_for_study(study=study))

    @extend_schema(
        operation_id="studies_acknowledgements_create",
        summary="Record that a clinician has seen a study the AI gave no result for",
        description="Acknowledges every refused film nobody has acknowledged and, when the study has no scored "
        "film and some film (or the study) has no assessment at all - its analysis failed - the study itself "
        "(`prediction_id` null); the study's `failure_reason` is in the audit event. 400 while the study is "
        "queued or running, when a film is scored (read it with feedback) or when nothing is left to acknowledge.",
        request=StudyAcknowledgementInputSerializer,
        responses={201: AcknowledgementOutputSerializer(many=True)},
        examples=[OpenApiExample("Seen", value={"comment": "Read by hand: clear lungs"}, request_only=True)],
    )
    def post(self, request: Request, study_id: int) -> Response:
        user = request_user(request)
        study = study_get_for_user(user=user, study_id=study_id)
        return self.acknowledge(request, partial(study_acknowledge_no_ai_result, user=user, study=study), many=True)
