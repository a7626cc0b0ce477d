"""Content negotiation for endpoints whose clients follow another standard (FHIR, DICOMweb): DRF's `?format=`
is not offered there (an unknown value would answer 404, and FHIR has its own `_format`), and the schema
documents no such parameter (PortalAutoSchema reads `uses_format_parameter`)."""

from __future__ import annotations

from typing import Any

from rest_framework.negotiation import DefaultContentNegotiation


class _NoFormatOverride:
    URL_FORMAT_OVERRIDE = None


class AcceptHeaderNegotiation(DefaultContentNegotiation):
    """The renderer is chosen by the Accept header alone."""

    uses_format_parameter = False
    settings = _NoFormatOverride()  # type: ignore[assignment]


class FirstRendererNegotiation(AcceptHeaderNegotiation):
    """Always the view's first renderer: for a view that writes its success body itself in its own media type
    (STOW-RS answers application/dicom+json) and answers errors in the API's JSON, whatever the client Accepts."""

    def select_renderer(self, request: Any, renderers: Any, format_suffix: Any = None) -> Any:
        return renderers[0], renderers[0].media_type
