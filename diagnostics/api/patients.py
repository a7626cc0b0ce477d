from __future__ import annotations

from rest_framework import serializers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from diagnostics.models import Patient
from diagnostics.selectors import patient_get_for_user, patient_list_for_user
from diagnostics.services.audit import audit_record
from diagnostics.services.patients import patient_create

from .common import request_user, service_errors


class PatientOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Patient
        fields = ["id", "medical_record_number", "name", "birth_date", "sex", "created_at"]


class PatientListCreateApi(APIView):
    class InputSerializer(serializers.Serializer):
        medical_record_number = serializers.CharField(max_length=64)
        name = serializers.CharField(max_length=200)
        birth_date = serializers.DateField()
        sex = serializers.ChoiceField(choices=Patient.Sex.choices, default=Patient.Sex.UNKNOWN)

    def get(self, request: Request) -> Response:
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(patient_list_for_user(user=request_user(request)), request, view=self)
        return paginator.get_paginated_response(PatientOutputSerializer(page, many=True).data)

    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with service_errors():
            patient = patient_create(user=request_user(request), **serializer.validated_data)
        return Response(PatientOutputSerializer(patient).data, status=status.HTTP_201_CREATED)


class PatientDetailApi(APIView):
    def get(self, request: Request, patient_id: int) -> Response:
        user = request_user(request)
        patient = patient_get_for_user(user=user, patient_id=patient_id)
        audit_record(action="patient.viewed", actor=user, target=patient, team=patient.team, detail={"via": "api"})
        return Response(PatientOutputSerializer(patient).data)
