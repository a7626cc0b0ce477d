"""X-ray images are only ever served through these access-checked views."""

from __future__ import annotations

import io

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.views.decorators.cache import cache_control
from PIL import Image as PILImage

from diagnostics.http import AuthenticatedHttpRequest
from diagnostics.selectors import image_get_for_user
from ml.preprocessing import decode_image_bytes

PREVIEW_SIZE = 1024


@login_required
@cache_control(private=True, max_age=300)
def image_preview(request: AuthenticatedHttpRequest, image_id: int) -> HttpResponse:
    """A PNG rendering of the stored image (DICOM included) for display in the browser."""
    image = image_get_for_user(user=request.user, image_id=image_id)
    with image.file.open("rb") as handle:
        decoded = decode_image_bytes(handle.read(), target_size=PREVIEW_SIZE)
    picture = PILImage.fromarray(decoded.pixels)
    picture.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return HttpResponse(buffer.getvalue(), content_type="image/png")
