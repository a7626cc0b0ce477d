from django.templatetags.static import static
from django.urls import include, path
from django.utils.functional import lazy
from django.views.generic import RedirectView

from diagnostics.views import images, models, patients, predictions, session, studies

urlpatterns = [
    # Pages link their icon; this answers clients that ask for /favicon.ico anyway (WhiteNoise serves it).
    path("favicon.ico", RedirectView.as_view(url=lazy(static, str)("diagnostics/favicon.svg"), permanent=True)),
    path("session/keepalive/", session.keepalive, name="session_keepalive"),
    # Sign-in: login, logout, OpenID Connect and two-factor pages (integrations/sign_in/).
    path("", include("diagnostics.integrations.sign_in.urls")),
    path("", studies.worklist, name="worklist"),
    path("patients/", patients.patient_list, name="patient_list"),
    path("patients/new/", patients.patient_new, name="patient_new"),
    path("patients/<int:patient_id>/", patients.patient_detail, name="patient_detail"),
    path("patients/<int:patient_id>/studies/new/", studies.study_new, name="study_new"),
    path("patients/<int:patient_id>/studies/inspect-dicom/", studies.study_inspect_dicom, name="study_inspect_dicom"),
    path("studies/<int:study_id>/", studies.study_detail, name="study_detail"),
    path("studies/<int:study_id>/live/", studies.study_live, name="study_live"),
    path("studies/<int:study_id>/compare/", studies.study_compare, name="study_compare"),
    path("studies/<int:study_id>/acknowledge/", predictions.study_acknowledge, name="study_acknowledge"),
    path("studies/<int:study_id>/report.pdf", studies.study_report, name="study_report"),
    path("images/<int:image_id>/preview.png", images.image_preview, name="image_preview"),
    path("predictions/<int:prediction_id>/heatmap.png", predictions.heatmap_image, name="heatmap_image"),
    path("predictions/<int:prediction_id>/feedback/", predictions.feedback_submit, name="feedback_submit"),
    path("predictions/<int:prediction_id>/acknowledge/", predictions.acknowledgement_submit, name="acknowledge"),
    path("models/", models.model_list, name="model_list"),
    path("models/<int:model_id>/", models.model_detail, name="model_detail"),
    path("models/<int:model_id>/plots/<slug:kind>.png", models.model_plot, name="model_plot"),
]
