"""The results sent back to the PACS a study came from, listed for API clients (docs/integration.md)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from diagnostics.api.common import ListApi, request_user
from diagnostics.models import PacsDelivery
from diagnostics.selectors import study_get_for_user

from .selectors import pacs_delivery_list_for_study


class PacsDeliveryOutputSerializer(serializers.ModelSerializer):
    peer = serializers.CharField(source="peer.ae_title", help_text="The PACS's AE title.")

    class Meta:
        model = PacsDelivery
        fields = ["id", "peer", "kind", "sop_instance_uid", "status", "attempts", "last_error", "created_at",
                  "delivered_at"]  # fmt: skip


class StudyPacsDeliveryListApi(ListApi):
    output_serializer = PacsDeliveryOutputSerializer

    @extend_schema(
        operation_id="studies_pacs_deliveries_list",
        summary="The results (DICOM SR, Secondary Captures) sent back to the PACS the study came from",
        responses=PacsDeliveryOutputSerializer(many=True),
    )
    def get(self, request: Request, study_id: int) -> Response:
        study = study_get_for_user(user=request_user(request), study_id=study_id)
        return self.list_response(pacs_delivery_list_for_study(study=study))
