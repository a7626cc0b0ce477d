"""A study's films with their assessments, and the study-result rule.

`study_result` is the one owner of the rule that says what a study's AI result is: the study page, the
PDF report, the API, the webhook, FHIR (through `study_summary`) and the worklist's stored triage key
(services.studies.study_refresh_latest_result) all ask it, so they cannot disagree.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

from diagnostics.models import Image, Prediction, Study

from .heatmaps import HeatmapState, prediction_heatmap_state


@dataclass(frozen=True)
class FilmResult:
    number: int  # 1-based, in upload order, as the pages and the PDF number films
    image: Image
    prediction: Prediction | None  # the newest assessment shown to clinicians
    heatmap: HeatmapState | None


def study_film_results(*, study: Study, heatmaps: bool = True) -> list[FilmResult]:
    """The films of a study from study_get_for_user (predictions prefetched) with their newest shown
    assessment and its heatmap's state: what the study page and the PDF report both show. Without
    `heatmaps` (the API, the webhook: a study's conclusion only), no heatmap is looked up."""
    results = []
    for number, image in enumerate(study.images.all(), start=1):
        prediction = next(iter(image.predictions.all()), None)  # primary only, newest first
        heatmap = prediction_heatmap_state(prediction=prediction) if prediction and heatmaps else None
        results.append(FilmResult(number, image, prediction, heatmap))
    return results


@dataclass(frozen=True)
class StudyResult:
    top: FilmResult | None  # the most suspicious scored film; None: no film has a score
    deciding: list[FilmResult]  # the scored films of the model that assessed last (`top` among them)


def study_result(*, results: Sequence[FilmResult]) -> StudyResult:
    """The study-result rule, its one owner. Each film counts with its newest assessment shown to
    clinicians (study_film_results); a film the input gate refused carries no score. Among the scored
    films, the model that assessed last decides (a later model's results replace an earlier one's), and
    the study is as suspicious as its most suspicious film of that model; equal scores go to the film
    uploaded first."""
    scored = [film for film in results if film.prediction is not None and film.prediction.analysable]
    if not scored:
        return StudyResult(top=None, deciding=[])
    newest = max(scored, key=_assessed_order)
    deciding = [film for film in scored if _model_id(film) == _model_id(newest)]
    top = max(deciding, key=lambda film: (_probability(film), -film.number))
    return StudyResult(top=top, deciding=deciding)


@dataclass(frozen=True)
class FilmRefusal:
    """Films the input gate refused for one reason (the reason as the gate wrote it)."""

    reason: str
    films: list[FilmResult]


@dataclass(frozen=True)
class StudySummary:
    """A study's conclusion, what the top of the study page says before the films.

    `conclusion` says which sentence applies: "queued" or "running" (no result yet), "failed" (the
    assessment stopped, the study's failure reason says why), "result" (at least one film was scored:
    `top` is the most suspicious), "not_analysable" (every assessed film was refused), "no_result"
    (done, yet no film has an assessment shown to clinicians).
    """

    conclusion: str
    films: int
    scored: int  # films the AI assessed and gave a score
    suspected: int  # scored films labelled pneumonia (at or above the threshold), from the model of `top`
    top: FilmResult | None  # the most suspicious scored film, from the model that assessed last
    refusals: list[FilmRefusal]

    @property
    def not_analysable(self) -> int:
        return sum(len(refusal.films) for refusal in self.refusals)

    @property
    def assessed(self) -> int:
        """Films with an assessment shown: a score or a refusal."""
        return self.scored + self.not_analysable

    @property
    def waiting(self) -> int:
        """Films with no assessment shown yet (all of them while the study is queued)."""
        return self.films - self.assessed

    @property
    def no_result_reason(self) -> str:
        """Why a done study has no AI result, in sentences for people: '' when it has one, or is not done."""
        if self.conclusion == "not_analysable":
            reasons = " ".join(
                f"{_images_words([film.number for film in refusal.films])}: {refusal.reason}"
                for refusal in self.refusals
            )
            head = (
                "The AI could not read the study's film."
                if self.films == 1
                else f"The AI could read none of the study's {self.films} films."
            )
            return f"{head} {reasons}".strip()
        if self.conclusion == "no_result":
            return "No film of this study has an AI assessment."
        return ""


def _images_words(numbers: Sequence[int]) -> str:
    """'Image 2', 'Images 1 and 3', 'Images 1, 2 and 4'."""
    if len(numbers) == 1:
        return f"Image {numbers[0]}"
    return "Images " + ", ".join(str(n) for n in numbers[:-1]) + f" and {numbers[-1]}"


def study_summary(*, status: str, results: Sequence[FilmResult]) -> StudySummary:
    """The study-level conclusion from study_film_results: its result by study_result (the rule the
    worklist's stored result follows too); refused films carry no score and are counted, with their
    reasons, apart."""
    assessed = [film for film in results if film.prediction is not None]
    scored = [film for film in assessed if film.prediction is not None and film.prediction.analysable]
    refusals: dict[str, list[FilmResult]] = {}
    for film in assessed:
        if film.prediction is not None and not film.prediction.analysable:
            refusals.setdefault(film.prediction.gate_reason or "No reason was recorded.", []).append(film)
    result = study_result(results=results)
    if status in (Study.Status.QUEUED, Study.Status.RUNNING, Study.Status.FAILED):
        conclusion = str(status)
    elif result.top is not None:
        conclusion = "result"
    elif refusals:
        conclusion = "not_analysable"
    else:
        conclusion = "no_result"
    return StudySummary(
        conclusion=conclusion,
        films=len(results),
        scored=len(scored),
        suspected=sum(1 for film in result.deciding if _suspected(film)),
        top=result.top,
        refusals=[FilmRefusal(reason, films) for reason, films in refusals.items()],
    )


def _assessed_order(film: FilmResult) -> tuple[datetime.datetime, int]:
    prediction = film.prediction
    return (prediction.created_at, prediction.pk) if prediction is not None else (datetime.datetime.min, 0)


def _model_id(film: FilmResult) -> int | None:
    return film.prediction.model_version_id if film.prediction is not None else None


def _probability(film: FilmResult) -> float:
    prediction = film.prediction
    return prediction.probability if prediction is not None and prediction.probability is not None else 0.0


def _suspected(film: FilmResult) -> bool:
    return film.prediction is not None and film.prediction.label == Prediction.Label.PNEUMONIA
