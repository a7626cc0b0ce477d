"""Studies: list, detail, and creation from multipart, JSON (base64) or a raw DICOM body.

Creating a study answers 202 with a status URL to poll; an API client may also
give a `callback_url` to be notified (signed webhook) when the study finishes,
and an `Idempotency-Key` header so that a retried POST never creates a second study.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from django.core.validators import URLValidator
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import Throttled
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from diagnostics.integrations.webhooks.apis import STUDY_FINISHED_FROM_BODY, STUDY_FINISHED_FROM_QUERY
from diagnostics.models import ApiToken, Image, Prediction, Study, User
from diagnostics.selectors import (
    patient_get_for_user,
    study_film_results,
    study_get_for_user,
    study_list_for_user,
    study_read_annotation,
    study_read_exists,
    study_summary,
)
from diagnostics.selectors.warnings import study_list_with_warning_facts, study_warnings
from diagnostics.services.audit import audit_record
from diagnostics.services.idempotency import IdempotencyKeyReused
from diagnostics.services.images import StorageUnavailable, ValidatedUpload
from diagnostics.services.studies import MAX_IMAGES_PER_STUDY, study_accept
from diagnostics.services.upload_admission import InferenceBacklogFull, UploadsBusy

from .common import ListApi, location_header, request_user, service_errors
from .errors import ApiError, ErrorSerializer
from .filters import StudyFilter
from .parsers import DicomParser, OctetStreamDicomParser
from .warnings import StudyWarningSerializer

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description=(
        "Any unique string (a UUID). A retried request with the same key and the same body returns the study "
        "the first one created instead of creating another; the same key with a different body answers 422."
    ),
)
# Response headers of a 202 (drf-spectacular declares an OpenApiParameter with `response` as one).
ACCEPTED_HEADERS = [
    location_header("The study's status URL (the same as status_url)."),
    OpenApiParameter(
        "Idempotent-Replayed",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        response=[202],
        enum=["true", "false"],
        description="Only when the request had an Idempotency-Key: `true` when this answer is the study an earlier "
        "request with the key created, `false` when this request created it.",
    ),
]


class PredictionOutputSerializer(serializers.ModelSerializer):
    model_version = serializers.CharField(source="model_version.name")
    model_version_id = serializers.IntegerField()
    outcome = serializers.ChoiceField(
        choices=Prediction.Outcome.choices,
        help_text="`scored`, or `not_analysable`: the input gate refused the film, which then has no "
        "probability and no label, only `not_analysable_reason`.",
    )
    probability = serializers.FloatField(
        allow_null=True,
        help_text="null when not analysable. A calibrated probability only where `probability_calibrated` "
        "is true (the model's expected calibration error on films of a new period is at most 0.05); "
        "otherwise an AI score that ranks films by suspicion.",
    )
    probability_calibrated = serializers.BooleanField(source="model_version.score_is_probability")
    label = serializers.SerializerMethodField()  # type: ignore[assignment]  # DRF stubs: Field.label is the title
    not_analysable_check = serializers.SerializerMethodField()
    not_analysable_reason = serializers.SerializerMethodField()
    intended_use_warning = serializers.SerializerMethodField()
    subtype = serializers.SerializerMethodField()

    class Meta:
        model = Prediction
        fields = [
            "id",
            "outcome",
            "probability",
            "probability_calibrated",
            "threshold",
            "label",
            "subtype",
            "not_analysable_check",
            "not_analysable_reason",
            "intended_use_warning",
            "model_version",
            "model_version_id",
            "model_sha256",
            "preprocessing_version",
            "input_sha256",
            "latency_ms",
            "created_at",
        ]

    @extend_schema_field(serializers.ChoiceField(choices=Prediction.Label.choices, allow_null=True))
    def get_label(self, prediction: Prediction) -> str | None:
        return prediction.label or None

    @extend_schema_field(serializers.CharField(allow_null=True, help_text="The gate check that failed."))
    def get_not_analysable_check(self, prediction: Prediction) -> str | None:
        return prediction.gate_code or None

    @extend_schema_field(serializers.CharField(allow_null=True, help_text="Why, in words for clinicians."))
    def get_not_analysable_reason(self, prediction: Prediction) -> str | None:
        return prediction.gate_reason or None

    @extend_schema_field(
        serializers.CharField(
            allow_null=True,
            help_text="This film's 'Outside intended use: …' (the patient's age, by the record or the film's DICOM "
            "header, is outside the intended ages) or 'Age unknown: …' warning. The study's `warnings` hold them "
            "for the whole study.",
        )
    )
    def get_intended_use_warning(self, prediction: Prediction) -> str | None:
        return prediction.intended_use_warning or None

    @extend_schema_field(
        inline_serializer(
            name="SubtypeSuggestion",
            fields={
                "label": serializers.ChoiceField(choices=["viral", "bacterial"]),
                "probability": serializers.FloatField(
                    help_text="P(viral) among pneumonias, Platt-calibrated on films of a new period (external/)."
                ),
                "probability_calibrated": serializers.BooleanField(
                    help_text="Whether it is shown to people as a probability (the same rule as "
                    "`probability_calibrated`: its cross-fitted calibration error's 95 % interval ends at most "
                    "0.05); otherwise as an AI score for viral."
                ),
                "expected_accuracy": serializers.FloatField(
                    allow_null=True, help_text="Accuracy of the label expected on new patients (cross-fitted)."
                ),
                "expected_accuracy_ci95": serializers.ListField(
                    child=serializers.FloatField(), allow_null=True, help_text="Its 95 % interval."
                ),
            },
            allow_null=True,
            help_text="AI suggestion, not a diagnosis: bacterial or viral, from a model with a subtype head, for a "
            "film it calls PNEUMONIA; null for a normal or not-analysable film, or a model without one.",
        )
    )
    def get_subtype(self, prediction: Prediction) -> dict[str, Any] | None:
        subtype = prediction.subtype
        if subtype is None:
            return None
        keys = ("label", "probability", "probability_calibrated", "expected_accuracy", "expected_accuracy_ci95")
        return {key: subtype[key] for key in keys}


class ImageOutputSerializer(serializers.ModelSerializer):
    predictions = PredictionOutputSerializer(many=True, help_text="Assessments shown to clinicians, newest first.")

    class Meta:
        model = Image
        fields = ["id", "format", "width", "height", "sha256", "size_bytes", "original_filename", "predictions"]


class StudySummarySerializer(serializers.ModelSerializer):
    patient_id = serializers.IntegerField()
    latest_probability = serializers.FloatField(allow_null=True)
    latest_label = serializers.ChoiceField(choices=Prediction.Label.choices, allow_null=True)
    warnings = serializers.SerializerMethodField(
        help_text="What the study's AI result must be read with (wrong patient, outside intended use, age "
        "unknown), the same warnings the study page, the worklist and the PDF show; empty when none."
    )

    read = serializers.SerializerMethodField(
        help_text="true when a clinician has read the study: a reading (feedback) of one of its films' "
        "assessments, or an acknowledgement ('seen: no AI result') of a film the AI could not assess or of the "
        "study itself when its analysis failed; "
        "the worklist's Read/Unread and the `reading` filter follow the same rule."
    )

    @extend_schema_field(StudyWarningSerializer(many=True))
    def get_warnings(self, study: Study) -> list[dict[str, Any]]:
        return [warning.as_dict() for warning in study_warnings(study=study)]

    @extend_schema_field(serializers.BooleanField())
    def get_read(self, study: Study) -> bool:
        annotated = getattr(study, "read", None)  # the list annotates it (study_read_annotation)
        if annotated is not None:
            return bool(annotated)
        return Study.objects.filter(pk=study.pk).filter(study_read_exists()).exists()

    class Meta:
        model = Study
        fields = [
            "id",
            "patient_id",
            "accession_number",
            "modality",
            "view_position",
            "status",
            "failure_reason",
            "created_at",
            "status_changed_at",
            "latest_probability",
            "latest_label",
            "read",
            "warnings",
        ]


class StudyDetailSerializer(StudySummarySerializer):
    images = ImageOutputSerializer(many=True)
    no_result_reason = serializers.SerializerMethodField(
        help_text="Why a done study has no AI result (no film could be scored), in sentences for people; null "
        "when it has one or is not done (a failed study says why in failure_reason)."
    )

    class Meta(StudySummarySerializer.Meta):
        fields = [*StudySummarySerializer.Meta.fields, "no_result_reason", "callback_url", "images"]

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_no_result_reason(self, study: Study) -> str | None:
        summary = study_summary(status=study.status, results=study_film_results(study=study, heatmaps=False))
        return summary.no_result_reason or None


class StudyAcceptedSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=Study.Status.choices)
    status_url = serializers.URLField(help_text="Poll this (GET) until status is done or failed.")


class StudyFieldsSerializer(serializers.Serializer):
    """What every way of creating a study says besides the images."""

    patient_id = serializers.IntegerField(min_value=1)
    accession_number = serializers.CharField(max_length=64, required=False, default="", allow_blank=True)
    modality = serializers.ChoiceField(choices=Study.Modality.choices, default=Study.Modality.CR)
    view_position = serializers.ChoiceField(choices=Study.ViewPosition.choices, default="", allow_blank=True)
    callback_url = serializers.CharField(
        max_length=500,
        required=False,
        default="",
        allow_blank=True,
        validators=[URLValidator(schemes=["http", "https"])],
        help_text="http(s) URL notified with a signed POST when the study is done or failed (API tokens only).",
    )


class MultipartStudyInputSerializer(StudyFieldsSerializer):
    """A study and its films as multipart parts named `images` (JPEG, PNG or DICOM)."""

    # Empty files are let through so the service refuses them with the same message as the pages.
    images = serializers.ListField(
        child=serializers.FileField(allow_empty_file=True), allow_empty=False, max_length=MAX_IMAGES_PER_STUDY
    )


class Base64ImageSerializer(serializers.Serializer):
    filename = serializers.CharField(max_length=255, required=False, default="upload")
    content_base64 = serializers.CharField(help_text="The file's bytes, base64-encoded (JPEG, PNG or DICOM).")

    def validate_content_base64(self, value: str) -> bytes:
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise serializers.ValidationError("This is not valid base64.") from None


class JsonStudyInputSerializer(StudyFieldsSerializer):
    """A study and its films, base64-encoded, in one JSON body."""

    images = serializers.ListField(child=Base64ImageSerializer(), allow_empty=False, max_length=MAX_IMAGES_PER_STUDY)


class DicomStudyQuerySerializer(StudyFieldsSerializer):
    filename = serializers.CharField(max_length=255, required=False, default="upload.dcm")
    modality = serializers.ChoiceField(
        choices=Study.Modality.choices, required=False, help_text="Default: the file's Modality tag, else CR."
    )
    view_position = serializers.ChoiceField(
        choices=Study.ViewPosition.choices,
        required=False,
        allow_blank=True,
        help_text="Default: the file's ViewPosition tag.",
    )


def accept_study(
    request: Request,
    *,
    fields: dict[str, Any],
    files: list[tuple[str, bytes]],
    uploads: list[ValidatedUpload] | None = None,
) -> Response:
    """Hand the request to services.studies.study_accept; answer 202 with where to poll."""
    user = request_user(request)
    patient = patient_get_for_user(user=user, patient_id=fields["patient_id"])
    raw_key = request.headers.get("Idempotency-Key")
    try:
        with service_errors("images"):
            accepted = study_accept(
                user=user,
                patient=patient,
                files=files,
                fields=fields,
                api_token=request.auth if isinstance(request.auth, ApiToken) else None,
                idempotency_key=raw_key,
                uploads=uploads,
            )
    except IdempotencyKeyReused as reused:
        raise ApiError(status_code=422, code="idempotency_key_reused", message=str(reused)) from None
    except StorageUnavailable as unavailable:
        raise ApiError(status_code=507, code="storage_unavailable", message=str(unavailable)) from None
    except UploadsBusy as busy:
        raise Throttled(wait=busy.retry_after, detail=str(busy)) from None
    except InferenceBacklogFull as full:
        raise ApiError(
            status_code=503, code="inference_busy", message=str(full), retry_after=full.retry_after
        ) from None
    study = accepted.study
    status_url = reverse("api_study_detail", kwargs={"study_id": study.pk}, request=request)
    headers = {"Location": status_url}
    if raw_key is not None:
        headers["Idempotent-Replayed"] = "true" if accepted.replayed else "false"
    body = StudyAcceptedSerializer({"id": study.pk, "status": study.status, "status_url": status_url}).data
    return Response(body, status=status.HTTP_202_ACCEPTED, headers=headers)


_ACCEPTED = OpenApiResponse(
    StudyAcceptedSerializer,
    description="Accepted: the study is queued for AI assessment. Poll status_url (also in Location).",
    examples=[
        OpenApiExample(
            "Queued", value={"id": 17, "status": "queued", "status_url": "https://portal.example/api/v1/studies/17/"}
        )
    ],
)
_NO_PATIENT = OpenApiResponse(
    ErrorSerializer,
    description="patient_id names no patient of your care team.",
    examples=[OpenApiExample("No such patient", value={"error": {"code": "not_found", "message": "No such patient."}})],
)
_BACKLOG_FULL = OpenApiResponse(
    ErrorSerializer,
    description=(
        "As many studies as the portal queues already wait for the AI assessment: nothing was stored. "
        "Send the request again after the Retry-After header's seconds."
    ),
    examples=[
        OpenApiExample(
            "Queue full",
            value={
                "error": {
                    "code": "inference_busy",
                    "message": "40 studies are waiting for the AI assessment, as many as this portal queues. "
                    "Nothing was stored: please send this study again in 1 second.",
                }
            },
        )
    ],
)
_STORAGE_UNAVAILABLE = OpenApiResponse(
    ErrorSerializer,
    description="The portal cannot store images now (its storage is full or not writable): nothing was stored.",
)
_KEY_REUSED = OpenApiResponse(
    ErrorSerializer,
    description="The Idempotency-Key was already used for a different request.",
    examples=[
        OpenApiExample(
            "Key reused",
            value={
                "error": {
                    "code": "idempotency_key_reused",
                    "message": "The Idempotency-Key 'a1' was already used for a different request (it created "
                    "study 17). Use a new key for a new study.",
                }
            },
        )
    ],
)


# What creating a study answers, whichever way the films come (multipart/JSON or a raw DICOM body).
_CREATE_RESPONSES = {
    202: _ACCEPTED,
    404: _NO_PATIENT,
    422: _KEY_REUSED,
    503: _BACKLOG_FULL,
    507: _STORAGE_UNAVAILABLE,
}


class StudyListCreateApi(ListApi):
    filterset_class = StudyFilter
    output_serializer = StudySummarySerializer
    parser_classes = [MultiPartParser, *ListApi.parser_classes]

    def select(self, user: User) -> Any:
        return study_list_with_warning_facts(study_list_for_user(user=user)).annotate(read=study_read_annotation())

    @extend_schema(
        operation_id="studies_list",
        summary="Your team's studies, with the latest AI probability and label",
        responses=StudySummarySerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        return self.list_response(self.get_queryset())

    @extend_schema(
        operation_id="studies_create",
        summary="Create a study from uploaded X-rays (multipart, or JSON with base64 images)",
        parameters=[IDEMPOTENCY_KEY, *ACCEPTED_HEADERS],
        request={"multipart/form-data": MultipartStudyInputSerializer, "application/json": JsonStudyInputSerializer},
        responses=_CREATE_RESPONSES,
        callbacks=[STUDY_FINISHED_FROM_BODY],
        examples=[
            OpenApiExample(
                "JSON with a base64 image",
                value={
                    "patient_id": 1,
                    "accession_number": "ACC-2024-001",
                    "modality": "DX",
                    "view_position": "PA",
                    "callback_url": "https://his.example/hooks/pneumonia",
                    "images": [{"filename": "chest.png", "content_base64": "iVBORw0KGgo..."}],
                },
                request_only=True,
                media_type="application/json",
            )
        ],
    )
    def post(self, request: Request) -> Response:
        if request.content_type.startswith("application/json"):
            serializer: serializers.Serializer = JsonStudyInputSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            data = dict(serializer.validated_data)
            files = [(image["filename"], image["content_base64"]) for image in data.pop("images")]
        else:
            serializer = MultipartStudyInputSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            data = dict(serializer.validated_data)
            files = [(uploaded.name or "upload", uploaded.read()) for uploaded in data.pop("images")]
        return accept_study(request, fields=data, files=files)


class StudyDicomCreateApi(APIView):
    parser_classes = [DicomParser, OctetStreamDicomParser]

    @extend_schema(
        operation_id="studies_create_dicom",
        summary="Create a study from one DICOM file sent as the request body",
        description=(
            "For integrations that forward a DICOM Part 10 file as is: `Content-Type: application/dicom` "
            "(or `application/octet-stream`, for client generators that send no other binary type), "
            "the study's fields in the query string. Modality and view position default to the file's tags."
        ),
        parameters=[DicomStudyQuerySerializer, IDEMPOTENCY_KEY, *ACCEPTED_HEADERS],
        request={"application/dicom": OpenApiTypes.BINARY, "application/octet-stream": OpenApiTypes.BINARY},
        responses=_CREATE_RESPONSES,
        callbacks=[STUDY_FINISHED_FROM_QUERY],
    )
    def post(self, request: Request) -> Response:
        query = DicomStudyQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        data = dict(query.validated_data)
        body = request.data if isinstance(request.data, bytes) else b""
        filename = data.pop("filename")
        # Modality and view position the query leaves out come from the file's tags (study_accept).
        return accept_study(request, fields=data, files=[(filename, body)])


class StudyDetailApi(APIView):
    @extend_schema(
        operation_id="studies_retrieve",
        summary="One study with its images and their AI assessments (the status URL)",
        responses=StudyDetailSerializer,
    )
    def get(self, request: Request, study_id: int) -> Response:
        user = request_user(request)
        study = study_get_for_user(user=user, study_id=study_id)
        audit_record(
            action="study.viewed", actor=user, target=study, team_id=study.patient.team_id, detail={"via": "api"}
        )
        return Response(StudyDetailSerializer(study).data)
