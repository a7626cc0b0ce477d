from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from diagnostics.models import Patient, User
from diagnostics.selectors import patient_get_for_user, patient_list_for_user
from diagnostics.services.audit import audit_record
from diagnostics.services.patients import patient_create

from .common import ListApi, request_user, service_errors
from .filters import PatientFilter


class PatientOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Patient
        fields = ["id", "medical_record_number", "name", "birth_date", "sex", "created_at"]


class PatientListCreateApi(ListApi):
    filterset_class = PatientFilter
    output_serializer = PatientOutputSerializer

    @extend_schema_serializer(component_name="PatientCreate")
    class InputSerializer(serializers.Serializer):
        medical_record_number = serializers.CharField(max_length=64)
        name = serializers.CharField(max_length=200)
        birth_date = serializers.DateField()
        sex = serializers.ChoiceField(choices=Patient.Sex.choices, default=Patient.Sex.UNKNOWN)

    def select(self, user: User) -> Any:
        return patient_list_for_user(user=user)

    @extend_schema(
        operation_id="patients_list",
        summary="Your team's patients",
        responses=PatientOutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        return self.list_response(self.get_queryset())

    @extend_schema(
        operation_id="patients_create",
        summary="Register a patient in your team",
        request=InputSerializer,
        responses={201: PatientOutputSerializer},
        examples=[
            OpenApiExample(
                "A patient",
                value={
                    "medical_record_number": "MRN-0042",
                    "name": "Ada Example",
                    "birth_date": "2021-03-04",
                    "sex": "F",
                },
                request_only=True,
            )
        ],
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with service_errors():
            patient = patient_create(user=request_user(request), **serializer.validated_data)
        return Response(PatientOutputSerializer(patient).data, status=status.HTTP_201_CREATED)


class PatientDetailApi(APIView):
    @extend_schema(operation_id="patients_retrieve", summary="One patient", responses=PatientOutputSerializer)
    def get(self, request: Request, patient_id: int) -> Response:
        user = request_user(request)
        patient = patient_get_for_user(user=user, patient_id=patient_id)
        audit_record(
            action="patient.viewed", actor=user, target=patient, team_id=patient.team_id, detail={"via": "api"}
        )
        return Response(PatientOutputSerializer(patient).data)
