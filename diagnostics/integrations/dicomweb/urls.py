"""DICOMweb under /dicomweb/ (apis.py beside this module): STOW-RS only."""

from django.urls import path

from . import apis

urlpatterns = [
    path("studies", apis.StowStudiesApi.as_view(), name="dicomweb_stow"),
]
