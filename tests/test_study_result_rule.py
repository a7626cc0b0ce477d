"""The study-result rule has one owner (selectors.study_result): the result stored on the study for the
worklist (services.studies.study_refresh_latest_result) and the conclusion the study page shows
(selectors.study_summary) must name the same score and label, whatever the films' history."""

from __future__ import annotations

import random

import pytest

from diagnostics.models import Prediction, Study
from diagnostics.selectors import study_film_results, study_get_for_user, study_list_for_user, study_summary
from diagnostics.services.studies import study_refresh_latest_result

from .factories import ModelVersionFactory, PredictionFactory, StudyFactory
from .images import jpeg_bytes

pytestmark = pytest.mark.django_db


def refused(*, image, model_version) -> Prediction:  # noqa: ANN001
    prediction = Prediction.objects.create(
        image=image, model_version=model_version, outcome=Prediction.Outcome.NOT_ANALYSABLE, gate_code="flat",
        gate_reason="The film is blank.", threshold=model_version.threshold, latency_ms=1.0,
        model_sha256=model_version.sha256, preprocessing_version=model_version.preprocessing_version,
        input_sha256=image.sha256,
    )  # fmt: skip
    study_refresh_latest_result(study=image.study)
    return prediction


def answers(*, user, study: Study) -> tuple[tuple[float | None, str | None], tuple[float | None, str | None]]:  # noqa: ANN001
    """(what the database keeps for the worklist, what the study page concludes)."""
    stored = study_list_for_user(user=user).values_list("latest_probability", "latest_label").get(pk=study.pk)
    loaded = study_get_for_user(user=user, study_id=study.pk)
    top = study_summary(status=loaded.status, results=study_film_results(study=loaded)).top
    shown = (top.prediction.probability, top.prediction.label) if top and top.prediction else (None, None)
    return (stored[0], stored[1] or None), shown


def test_a_film_assessed_again_by_an_earlier_model_counts_with_that_model(owner, patient):
    """After a rollback the earlier model assesses a film again: the film's newest assessment is what
    the page shows, so the later model's older score of it no longer counts anywhere."""
    films = [("a.jpeg", jpeg_bytes(seed=1)), ("b.jpeg", jpeg_bytes(seed=2))]
    study = StudyFactory(created_by=owner, patient=patient, films=films)
    earlier, later = ModelVersionFactory(name="earlier"), ModelVersionFactory(name="later")
    first, second = study.images.order_by("pk")
    PredictionFactory(image=first, model_version=later, probability=0.8)
    PredictionFactory(image=first, model_version=earlier, probability=0.2)
    PredictionFactory(image=second, model_version=later, probability=0.4)
    stored, shown = answers(user=owner, study=study)
    assert stored == shown == (pytest.approx(0.4), "NORMAL")


def test_the_database_and_the_page_agree_on_every_history(owner, patient):
    """Seeded random histories: films scored, refused or left alone by up to three models in turn,
    shadow predictions, equal scores; after every stored prediction both answers are the same."""
    rng = random.Random(30)  # noqa: S311 (a reproducible history, not a secret)
    models = [ModelVersionFactory(name=f"model-{i}", threshold=rng.choice((0.3, 0.5))) for i in range(3)]
    shadow = ModelVersionFactory(name="shadow")
    for case in range(6):
        films = [(f"f{i}.jpeg", jpeg_bytes(seed=10 * case + i)) for i in range(3)]
        study = StudyFactory(created_by=owner, patient=patient, films=films)
        images = list(study.images.order_by("pk"))
        for _ in range(rng.randint(1, 5)):  # models in any order: rollbacks assess films again
            model = rng.choice(models)
            for image in images:
                step = rng.random()
                if step < 0.2 or image.predictions.filter(model_version=model).exists():
                    continue
                if step < 0.35:
                    refused(image=image, model_version=model)
                else:
                    PredictionFactory(image=image, model_version=model, probability=rng.choice((0.2, 0.4, 0.6, 0.8)))
                stored, shown = answers(user=owner, study=study)
                assert stored == shown, (case, model.name)
        PredictionFactory(image=images[0], model_version=shadow, probability=0.99, role=Prediction.Role.SHADOW)
        stored, shown = answers(user=owner, study=study)
        assert stored == shown, (case, "shadow")
