"""selectors.study_summary: the conclusion the study page gives before its films (no database:
the films are built in memory, as study_film_results returns them)."""

from __future__ import annotations

import datetime

import pytest

from diagnostics.models import Image, Prediction, Study
from diagnostics.selectors import FilmResult, study_summary

T0 = datetime.datetime(2025, 3, 1, 9, 0, tzinfo=datetime.UTC)
_pk = iter(range(1, 10_000))


def film(number: int, prediction: Prediction | None = None, name: str = "") -> FilmResult:
    return FilmResult(number, Image(pk=number, original_filename=name or f"film{number}.png"), prediction, None)


def scored(probability: float, *, model: int = 1, minute: int = 0, threshold: float = 0.5) -> Prediction:
    label = Prediction.Label.PNEUMONIA if probability >= threshold else Prediction.Label.NORMAL
    return Prediction(pk=next(_pk), model_version_id=model, probability=probability, threshold=threshold,
                      label=label, created_at=T0 + datetime.timedelta(minutes=minute))  # fmt: skip


def refused(reason: str, *, model: int = 1) -> Prediction:
    return Prediction(pk=next(_pk), model_version_id=model, outcome=Prediction.Outcome.NOT_ANALYSABLE,
                      gate_code="check", gate_reason=reason, threshold=0.5, created_at=T0)  # fmt: skip


def test_the_most_suspicious_scored_film_is_the_conclusion_and_refusals_are_grouped_by_reason():
    films = [
        film(1, scored(0.2)),
        film(2, refused("This is a CT image.")),
        film(3, scored(0.91)),
        film(4, refused("The film is a lateral view.")),
        film(5, scored(0.7)),
        film(6, refused("This is a CT image.")),
    ]
    summary = study_summary(status=Study.Status.DONE, results=films)
    assert summary.conclusion == "result"
    assert summary.top is films[2]
    assert (summary.films, summary.scored, summary.not_analysable, summary.waiting) == (6, 3, 3, 0)
    assert summary.suspected == 2
    assert [(r.reason, [f.number for f in r.films]) for r in summary.refusals] == [
        ("This is a CT image.", [2, 6]),
        ("The film is a lateral view.", [4]),
    ]


def test_a_tie_goes_to_the_first_film():
    films = [film(1, scored(0.6)), film(2, scored(0.6))]
    assert study_summary(status="done", results=films).top is films[0]


def test_only_the_model_that_assessed_last_counts_as_the_worklist_does():
    # Film 1's newest result is still from the old model (0.95); the new model scored film 2 later.
    films = [film(1, scored(0.95, model=1, minute=0)), film(2, scored(0.3, model=2, minute=5))]
    summary = study_summary(status="done", results=films)
    assert summary.top is films[1]
    assert summary.suspected == 0


def test_a_study_whose_films_were_all_refused_is_not_analysable():
    summary = study_summary(status="done", results=[film(1, refused("Blank image.")), film(2, refused("Blank image."))])
    assert summary.conclusion == "not_analysable" and summary.top is None
    assert summary.not_analysable == 2 and summary.scored == 0
    assert [len(r.films) for r in summary.refusals] == [2]


def test_a_refusal_without_a_reason_still_says_so():
    [refusal] = study_summary(status="done", results=[film(1, refused(""))]).refusals
    assert refusal.reason == "No reason was recorded."


@pytest.mark.parametrize("status", ["queued", "running", "failed"])
def test_a_study_that_is_not_done_says_so_whatever_its_films_hold(status):
    films = [film(1, scored(0.8)), film(2), film(3)]
    summary = study_summary(status=status, results=films)
    assert summary.conclusion == status
    assert (summary.assessed, summary.waiting) == (1, 2)


def test_a_done_study_with_no_assessment_shown_has_no_result():
    summary = study_summary(status="done", results=[film(1)])
    assert summary.conclusion == "no_result" and summary.top is None and summary.waiting == 1
