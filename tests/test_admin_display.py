"""The admin shows stored values for people (issue 33, item 5): JSON fields as tables, a score and threshold
as percentages, latencies in whole ms; django-celery-beat's periodic-task form runs its one inline script by
the request's nonce, under a policy that still refuses every other inline script."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from diagnostics.models import AuditEvent, Prediction, TrainingRun
from diagnostics.services.audit import audit_record

from .conftest import login_client
from .factories import AdminFactory, PredictionFactory, StudyFactory
from .images import dicom_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client() -> Client:
    return login_client(AdminFactory(is_superuser=True))


def text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_a_prediction_shows_its_numbers_rounded_and_the_gate_measurements_as_a_table(admin_client, owner, patient):
    prediction = PredictionFactory(study=StudyFactory(created_by=owner, patient=patient), probability=0.9996)
    Prediction.objects.filter(pk=prediction.pk).update(
        threshold=0.5188876390457153, latency_ms=4.1497299999946335,
        gate_measurements={"chest_score": 0.9812345, "aspect_ratio": 1.21, "grey": True},
    )  # fmt: skip
    page = admin_client.get(reverse("admin:diagnostics_prediction_change", args=[prediction.pk])).content.decode()
    words = text(page)
    assert "> 99.9 %" in words.replace("&gt;", ">") and "51.9 %" in words and "4 ms" in words
    assert "0.5188876390457153" not in page and "4.1497299999946335" not in page and "0.9996" not in page
    assert "chest score" in words and "0.9812" in words and "{&quot;" not in page and '{"' not in page
    listing = admin_client.get(reverse("admin:diagnostics_prediction_changelist")).content.decode()
    assert "&gt; 99.9 %" in listing


def test_an_audit_events_detail_is_a_table_not_json(admin_client, owner):
    event = audit_record(action="study.listed", actor=owner, team_id=owner.team_id,
                         detail={"query": "", "page": 1, "rows": 12})  # fmt: skip
    page = admin_client.get(reverse("admin:diagnostics_auditevent_change", args=[event.pk])).content.decode()
    assert '{"query"' not in page and "{&quot;query&quot;" not in page
    assert re.search(r"<th[^>]*>\s*rows\s*</th>\s*<td>\s*12\s*</td>", page), page
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_an_images_dicom_header_and_a_training_runs_configuration_are_tables(admin_client, owner, patient):
    study = StudyFactory(created_by=owner, patient=patient, films=[("film.dcm", dicom_bytes())])
    image = study.images.get()
    page = admin_client.get(reverse("admin:diagnostics_image_change", args=[image.pk])).content.decode()
    assert "DICOM header" in page and "Modality" in text(page) and '{"' not in page
    run = TrainingRun.objects.create(architecture="cnn", config={"epochs": 3, "seed": 7},
                                     progress={"epoch": 1, "stage": "head"})  # fmt: skip
    page = admin_client.get(reverse("admin:diagnostics_trainingrun_change", args=[run.pk])).content.decode()
    assert re.search(r"<th[^>]*>\s*epochs\s*</th>\s*<td>\s*3\s*</td>", page) and "{&quot;epochs" not in page


def test_the_periodic_task_form_runs_its_script_by_nonce_and_the_policy_stays_strict(admin_client):
    first = admin_client.get(reverse("admin:django_celery_beat_periodictask_add"))
    assert first.status_code == 200
    policy = first["Content-Security-Policy"]
    script_src = policy.split("script-src")[1].split(";")[0]
    [nonce] = re.findall(r"'nonce-([^']+)'", script_src)
    assert "unsafe-inline" not in script_src and "unsafe-eval" not in script_src
    html = first.content.decode()
    assert f'<script id="periodic-task-overrides" nonce="{nonce}">' in html
    inline = re.findall(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", html)
    assert inline == [f'<script id="periodic-task-overrides" nonce="{nonce}">'], inline  # the only one
    second = admin_client.get(reverse("admin:django_celery_beat_periodictask_add"))
    assert f"'nonce-{nonce}'" not in second["Content-Security-Policy"]  # a fresh nonce per answer
    assert admin_client.get(reverse("admin:django_celery_beat_periodictask_changelist")).status_code == 200
