from django.urls import path

from . import patients, studies

urlpatterns = [
    path("patients/", patients.PatientListCreateApi.as_view(), name="api_patient_list"),
    path("patients/<int:patient_id>/", patients.PatientDetailApi.as_view(), name="api_patient_detail"),
    path("studies/", studies.StudyListCreateApi.as_view(), name="api_study_list"),
    path("studies/<int:study_id>/", studies.StudyDetailApi.as_view(), name="api_study_detail"),
]
