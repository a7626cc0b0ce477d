from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("diagnostics.api.urls")),
    # FHIR R4 for EHRs (integrations/fhir/): token-authenticated, scoped to the caller's team.
    path("fhir/", include("diagnostics.integrations.fhir.urls")),
    # DICOMweb STOW-RS for PACSes and modalities (integrations/dicomweb/): the same ingest as the receiver.
    path("dicomweb/", include("diagnostics.integrations.dicomweb.urls")),
    path("", include("diagnostics.urls")),
]

# An upload stopped while streaming raises RequestDataTooBig: answer 413 with the reason.
handler400 = "diagnostics.upload_limits.bad_request"
# A database error raised outside a view (in a middleware) answers 503 with Retry-After too.
handler500 = "diagnostics.database_unavailable.server_error"
