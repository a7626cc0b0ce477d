"""The study's current AI result, kept on the study for the worklist: what it is, the backfill, the pages."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django.urls import reverse

from diagnostics.models import Prediction
from diagnostics.services.studies import study_refresh_latest_result
from diagnostics.views.studies import WORKLIST_LIMIT

from .conftest import login_client
from .factories import ModelVersionFactory, PredictionFactory, StudyFactory
from .images import jpeg_bytes


def films(count: int) -> list[tuple[str, bytes]]:
    return [(f"f{i}.jpeg", jpeg_bytes(seed=i)) for i in range(count)]


pytestmark = pytest.mark.django_db


def table_rows(page: str) -> str:
    """The worklist table's body: its rows, one per study listed on this page."""
    start = page.index("<tbody")
    return page[start : page.index("</tbody>", start)]


def test_a_study_is_as_suspicious_as_its_most_suspicious_film(owner, patient):
    study = StudyFactory(created_by=owner, patient=patient, films=films(3))
    first = ModelVersionFactory(name="first")
    for image, probability in zip(study.images.order_by("pk"), (0.2, 0.8, 0.4), strict=True):
        PredictionFactory(image=image, model_version=first, probability=probability, refresh_study=False)
    study_refresh_latest_result(study=study)
    study.refresh_from_db()
    assert (study.latest_probability, study.latest_label) == (pytest.approx(0.8), "PNEUMONIA")


def test_the_model_that_predicted_last_decides_and_shadow_results_never_count(owner, patient):
    study = StudyFactory(created_by=owner, patient=patient, films=films(2))
    old, new, shadow = (
        ModelVersionFactory(name="old"),
        ModelVersionFactory(name="new", threshold=0.3),
        ModelVersionFactory(name="shadow"),
    )
    images = list(study.images.order_by("pk"))
    for image in images:
        PredictionFactory(image=image, model_version=old, probability=0.9, refresh_study=False)
    for image, probability in zip(images, (0.1, 0.35), strict=True):
        PredictionFactory(image=image, model_version=new, probability=probability, refresh_study=False)
    for image in images:
        PredictionFactory(
            image=image, model_version=shadow, probability=0.99, role=Prediction.Role.SHADOW, refresh_study=False
        )
    study_refresh_latest_result(study=study)
    study.refresh_from_db()
    assert (study.latest_probability, study.latest_label) == (pytest.approx(0.35), "PNEUMONIA")


def test_a_study_without_predictions_has_no_result(owner, patient):
    study = StudyFactory(created_by=owner, patient=patient, films=films(1))
    study_refresh_latest_result(study=study)
    study.refresh_from_db()
    assert study.latest_probability is None and study.latest_label is None


def test_the_migration_backfills_studies_predicted_before_it(owner, patient):
    migration = importlib.import_module("diagnostics.migrations.0005_study_latest_ai_result")
    first = ModelVersionFactory(name="first")
    predicted, waiting = (
        StudyFactory(created_by=owner, patient=patient, films=films(2)),
        StudyFactory(created_by=owner, patient=patient, films=films(1)),
    )
    for image, probability in zip(predicted.images.order_by("pk"), (0.6, 0.3), strict=True):
        PredictionFactory(image=image, model_version=first, probability=probability, refresh_study=False)
    migration.backfill_latest_result(apps, schema_editor=None)
    predicted.refresh_from_db()
    waiting.refresh_from_db()
    assert (predicted.latest_probability, predicted.latest_label) == (pytest.approx(0.6), "PNEUMONIA")
    assert waiting.latest_probability is None and waiting.latest_label is None


def test_the_worklist_pages_through_studies_in_triage_order_keeping_the_filters(owner, patient):
    first = ModelVersionFactory(name="first")
    studies = [StudyFactory(created_by=owner, patient=patient, films=films(1)) for _ in range(WORKLIST_LIMIT + 3)]
    for rank, study in enumerate(studies):
        PredictionFactory(image=study.images.get(), model_version=first, probability=rank / 100.0, refresh_study=False)
        study_refresh_latest_result(study=study)
    client = login_client(owner)
    page_one = client.get(reverse("worklist"), {"status": "queued"}).content.decode()
    assert f"Studies 1–{WORKLIST_LIMIT} of {len(studies)}" in page_one
    most_suspicious = studies[-1]
    # Which studies a page lists is read from its table's rows: the "Read the next unread study" link above the
    # table names the first unread study of the whole filtered list, whatever the page.
    rows_one = table_rows(page_one)
    assert f'href="/studies/{most_suspicious.pk}/' in rows_one and f'href="/studies/{studies[0].pk}/' not in rows_one
    assert rows_one.count("data-row-link") == WORKLIST_LIMIT
    assert 'href="?status=queued&amp;page=2"' in page_one
    page_two = client.get(reverse("worklist"), {"status": "queued", "page": "2"}).content.decode()
    assert f"Studies {WORKLIST_LIMIT + 1}–{len(studies)} of {len(studies)}" in page_two
    rows_two = table_rows(page_two)
    assert f'href="/studies/{studies[0].pk}/' in rows_two and f'href="/studies/{most_suspicious.pk}/' not in rows_two
    assert rows_two.count("data-row-link") == 3
    # The live refresh of page 2 reloads page 2 (the studies are still queued: the page polls).
    assert 'hx-get="/?status=queued&amp;page=2"' in page_two
    # A page number past the end shows the last page rather than an error.
    assert client.get(reverse("worklist"), {"page": "999"}).status_code == 200
