"""X-ray images are only ever served through these access-checked views."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpResponse, HttpResponseBadRequest
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET

from diagnostics.http import AuthenticatedHttpRequest
from diagnostics.selectors import image_get_for_user
from diagnostics.services.audit import audit_read
from diagnostics.services.reports import Window, image_display_pixels, png_bytes
from ml.serving.decode import ImageDecodeError


@login_required
@require_GET
@cache_control(private=True, max_age=300)
def image_preview(request: AuthenticatedHttpRequest, image_id: int) -> HttpResponse:
    """A PNG rendering of the stored image for the browser; `wc`/`ww` window a DICOM film (% of its range)."""
    image = image_get_for_user(user=request.user, image_id=image_id)
    try:
        window = Window.from_query(request.GET.get("wc"), request.GET.get("ww"))
        pixels = image_display_pixels(image=image, window=window)
    except (ValidationError, ImageDecodeError) as error:
        return HttpResponseBadRequest(" ".join(getattr(error, "messages", [str(error)])), content_type="text/plain")
    audit_read(action="image.viewed", actor=request.user, target=image, team_id=request.user.team_id)
    return HttpResponse(png_bytes(pixels), content_type="image/png")
