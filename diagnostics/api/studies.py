from __future__ import annotations

from rest_framework import serializers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from diagnostics.models import Image, Prediction, Study
from diagnostics.selectors import patient_get_for_user, study_get_for_user, study_list_for_user
from diagnostics.services.audit import audit_record
from diagnostics.services.images import image_validate_uploaded_files
from diagnostics.services.studies import study_create

from .common import request_user, service_errors


class PredictionOutputSerializer(serializers.ModelSerializer):
    model_version = serializers.CharField(source="model_version.name")

    class Meta:
        model = Prediction
        fields = [
            "id", "probability", "threshold", "label", "model_version", "model_sha256",
            "preprocessing_version", "input_sha256", "latency_ms", "created_at",
        ]


class ImageOutputSerializer(serializers.ModelSerializer):
    predictions = PredictionOutputSerializer(many=True)

    class Meta:
        model = Image
        fields = ["id", "format", "width", "height", "sha256", "size_bytes", "original_filename", "predictions"]


class StudySummarySerializer(serializers.ModelSerializer):
    patient_id = serializers.IntegerField()
    latest_probability = serializers.FloatField(allow_null=True)
    latest_label = serializers.CharField(allow_null=True)

    class Meta:
        model = Study
        fields = [
            "id", "patient_id", "accession_number", "modality", "view_position", "status",
            "failure_reason", "created_at", "latest_probability", "latest_label",
        ]


class StudyDetailSerializer(StudySummarySerializer):
    images = ImageOutputSerializer(many=True)

    class Meta(StudySummarySerializer.Meta):
        fields = [*StudySummarySerializer.Meta.fields, "images"]


class StudyListCreateApi(APIView):
    parser_classes = [MultiPartParser, FormParser]

    class InputSerializer(serializers.Serializer):
        patient_id = serializers.IntegerField()
        accession_number = serializers.CharField(max_length=64, required=False, default="", allow_blank=True)
        modality = serializers.ChoiceField(choices=Study.Modality.choices, default=Study.Modality.CR)
        view_position = serializers.ChoiceField(choices=Study.ViewPosition.choices, default="", allow_blank=True)
        # Empty files are let through so the service refuses them with the same message as the pages.
        images = serializers.ListField(child=serializers.FileField(allow_empty_file=True), allow_empty=False)

    def get(self, request: Request) -> Response:
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(study_list_for_user(user=request_user(request)), request, view=self)
        return paginator.get_paginated_response(StudySummarySerializer(page, many=True).data)

    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        patient = patient_get_for_user(user=request_user(request), patient_id=data["patient_id"])
        with service_errors():
            uploads = image_validate_uploaded_files(files=data["images"])
            study = study_create(
                user=request_user(request),
                patient=patient,
                uploads=uploads,
                accession_number=data["accession_number"],
                modality=data["modality"],
                view_position=data["view_position"],
            )
        status_url = reverse("api_study_detail", kwargs={"study_id": study.pk}, request=request)
        return Response(
            {"id": study.pk, "status": study.status, "status_url": status_url},
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": status_url},
        )


class StudyDetailApi(APIView):
    def get(self, request: Request, study_id: int) -> Response:
        user = request_user(request)
        study = study_get_for_user(user=user, study_id=study_id)
        audit_record(
            action="study.viewed", actor=user, target=study, team_id=study.patient.team_id, detail={"via": "api"}
        )
        return Response(StudyDetailSerializer(study).data)
