"""Clinical records in the Django admin are shown, never edited there (edits bypass the services and the audit)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from diagnostics.models import Patient

from .conftest import login_client
from .factories import AdminFactory, StudyFactory

pytestmark = pytest.mark.django_db


def test_patient_study_and_image_admin_pages_show_the_records_read_only(owner, patient):
    study = StudyFactory(created_by=owner, patient=patient)
    image = study.images.get()
    admin = login_client(AdminFactory(is_superuser=True))
    for name, obj in (("patient", patient), ("study", study), ("image", image)):
        page = admin.get(reverse(f"admin:diagnostics_{name}_change", args=[obj.pk]))
        assert page.status_code == 200, name  # the image page answered 500 before
        assert 'name="_save"' not in page.content.decode(), name
    assert image.file.name in admin.get(reverse("admin:diagnostics_image_change", args=[image.pk])).content.decode()
    moved = admin.post(
        reverse("admin:diagnostics_patient_change", args=[patient.pk]),
        {"name": "Changed", "medical_record_number": "X", "birth_date": "2022-01-01", "sex": "F", "team": ""},
    )
    assert moved.status_code == 403
    assert Patient.objects.get(pk=patient.pk).name == patient.name
    assert admin.get(reverse("admin:diagnostics_study_add")).status_code == 403


def test_admin_names_webhook_deliveries_and_shows_the_portal_icon():
    admin = login_client(AdminFactory(is_superuser=True))
    index = admin.get(reverse("admin:index")).content.decode()
    assert "Webhook deliveries" in index and "Webhook deliverys" not in index
    # Without a linked icon, browsers ask for /favicon.ico on every admin page.
    assert 'rel="icon" href="/static/diagnostics/favicon.svg"' in index
    listing = admin.get(reverse("admin:diagnostics_webhookdelivery_changelist")).content.decode()
    assert 'rel="icon" href="/static/diagnostics/favicon.svg"' in listing
