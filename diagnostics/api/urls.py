from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from diagnostics.integrations.fhir import apis as fhir
from diagnostics.integrations.pacs_out import apis as pacs_out
from diagnostics.integrations.webhooks import apis as webhooks

from . import account, model_versions, patients, predictions, studies, tokens, training_runs
from .errors import api_not_found

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="api_schema"),
    # The split view serves Swagger UI's start-up script as a file: no inline script (CSP).
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api_schema"), name="api_docs"),
    path("me/", account.MeApi.as_view(), name="api_me"),
    path("patients/", patients.PatientListCreateApi.as_view(), name="api_patient_list"),
    path("patients/<int:patient_id>/", patients.PatientDetailApi.as_view(), name="api_patient_detail"),
    path("studies/", studies.StudyListCreateApi.as_view(), name="api_study_list"),
    path("studies/dicom/", studies.StudyDicomCreateApi.as_view(), name="api_study_create_dicom"),
    path("studies/<int:study_id>/", studies.StudyDetailApi.as_view(), name="api_study_detail"),
    path("studies/<int:study_id>/fhir/", fhir.StudyFhirReportApi.as_view(), name="api_study_fhir"),
    path(
        "studies/<int:study_id>/pacs-deliveries/",
        pacs_out.StudyPacsDeliveryListApi.as_view(),
        name="api_study_pacs_deliveries",
    ),
    path(
        "studies/<int:study_id>/webhook-deliveries/",
        webhooks.StudyWebhookDeliveryListApi.as_view(),
        name="api_study_webhook_deliveries",
    ),
    path("predictions/", predictions.PredictionListApi.as_view(), name="api_prediction_list"),
    path("predictions/<int:prediction_id>/", predictions.PredictionDetailApi.as_view(), name="api_prediction_detail"),
    path(
        "predictions/<int:prediction_id>/feedback/",
        predictions.PredictionFeedbackApi.as_view(),
        name="api_prediction_feedback",
    ),
    path(
        "studies/<int:study_id>/acknowledgements/",
        predictions.StudyAcknowledgementApi.as_view(),
        name="api_study_acknowledgements",
    ),
    path(
        "predictions/<int:prediction_id>/acknowledgements/",
        predictions.PredictionAcknowledgementApi.as_view(),
        name="api_prediction_acknowledgements",
    ),
    path("model-versions/", model_versions.ModelVersionListApi.as_view(), name="api_model_version_list"),
    path(
        "model-versions/<int:model_version_id>/",
        model_versions.ModelVersionDetailApi.as_view(),
        name="api_model_version_detail",
    ),
    path(
        "model-versions/<int:model_version_id>/promote/",
        model_versions.ModelVersionPromoteApi.as_view(),
        name="api_model_version_promote",
    ),
    path(
        "model-versions/<int:model_version_id>/rollback/",
        model_versions.ModelVersionRollbackApi.as_view(),
        name="api_model_version_rollback",
    ),
    path(
        "model-versions/<int:model_version_id>/archive/",
        model_versions.ModelVersionArchiveApi.as_view(),
        name="api_model_version_archive",
    ),
    path(
        "model-versions/<int:model_version_id>/shadow/",
        model_versions.ModelVersionShadowApi.as_view(),
        name="api_model_version_shadow",
    ),
    path("training-runs/", training_runs.TrainingRunListStartApi.as_view(), name="api_training_run_list"),
    path("training-runs/<int:run_id>/", training_runs.TrainingRunDetailApi.as_view(), name="api_training_run_detail"),
    path(
        "training-runs/<int:run_id>/cancel/",
        training_runs.TrainingRunCancelApi.as_view(),
        name="api_training_run_cancel",
    ),
    path("api-tokens/", tokens.ApiTokenListIssueApi.as_view(), name="api_token_list"),
    path("api-tokens/<int:token_id>/", tokens.ApiTokenDetailApi.as_view(), name="api_token_detail"),
    path("api-tokens/<int:token_id>/revoke/", tokens.ApiTokenRevokeApi.as_view(), name="api_token_revoke"),
    # Last: any other path under /api/v1/ answers 404 in the API's error shape, not an HTML page.
    re_path(r"^(?P<unmatched>.*)$", api_not_found),
]
