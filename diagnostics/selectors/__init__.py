"""Every read goes through a function here; reads of clinical data check access.

A user sees only the patients, studies and images of their own care team; a
lookup outside it raises Http404, so another team's record is indistinguishable
from one that does not exist. Clinical lists never include shadow predictions.
Beside this module: `monitoring` (a model's live use, for admins), `heatmaps`
(where a prediction's heatmap stands) and `comparison` (a patient's previous study beside this one).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

from django.contrib.auth.models import AnonymousUser
from django.db.models import CharField, Count, Exists, IntegerField, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.db.models.fields.json import KT
from django.db.models.functions import Coalesce
from django.http import Http404
from django.utils import timezone

from diagnostics.display import dicom_date
from diagnostics.models import (
    ApiToken,
    Feedback,
    Image,
    ModelVersion,
    PacsDelivery,
    Patient,
    Prediction,
    Study,
    TrainingRun,
    User,
    WebhookDelivery,
)

from .heatmaps import HeatmapState, prediction_heatmap_state


def patient_list_for_user(*, user: User | AnonymousUser) -> QuerySet[Patient]:
    if not user.is_authenticated or user.team_id is None:
        return Patient.objects.none()
    return Patient.objects.filter(team_id=user.team_id)


def patient_get_for_user(*, user: User | AnonymousUser, patient_id: int) -> Patient:
    try:
        return patient_list_for_user(user=user).get(pk=patient_id)
    except (Patient.DoesNotExist, ValueError, TypeError):
        raise Http404("No such patient.") from None


def study_list_for_user(*, user: User | AnonymousUser) -> QuerySet[Study]:
    """The team's studies, newest first, with the patient (and, on each study, its current AI result)."""
    if not user.is_authenticated or user.team_id is None:
        return Study.objects.none()
    return Study.objects.filter(patient__team_id=user.team_id).select_related("patient")


def study_list_with_film_counts(studies: QuerySet[Study]) -> QuerySet[Study]:
    """`film_count` on each study: one correlated count in the list's own query, computed only for
    the rows a page shows (a GROUP BY over the whole list would give up the triage index)."""
    films = Image.objects.filter(study=OuterRef("pk")).order_by().values("study").annotate(n=Count("pk")).values("n")
    return studies.annotate(film_count=Coalesce(Subquery(films, output_field=IntegerField()), 0))


def study_read() -> Exists:
    """Whether a study has been read: a clinician's reading (Feedback: agreeing with or correcting the AI)
    exists on an assessment shown to clinicians of any of its films. A film the input gate refused has no
    assessment to read, so a study of refused films alone stays unread."""
    readings = Feedback.objects.filter(
        prediction__image__study=OuterRef("pk"), prediction__role=Prediction.Role.PRIMARY
    )
    return Exists(readings)


def study_dicom_date() -> Subquery:
    """The DICOM StudyDate (YYYYMMDD) of the first of a study's films that records one, as study_taken_on
    reads it; NULL when none does (JPEG and PNG films, a header without it). A study has no date field."""
    dates = (
        Image.objects.filter(study=OuterRef("pk"))
        .annotate(study_date=KT("dicom_metadata__StudyDate"))
        .filter(study_date__regex=r"^[0-9]{8}$")
        .order_by("created_at", "pk")
        .values("study_date")[:1]
    )
    return Subquery(dates, output_field=CharField())


def study_list_with_row_facts(studies: QuerySet[Study]) -> QuerySet[Study]:
    """What a worklist row shows besides the study itself: `film_count`, `read` (study_read) and
    `dicom_study_date` (study_dicom_date; the row falls back to the upload date), each a correlated
    subquery of the list's own query, computed only for the rows a page shows."""
    return study_list_with_film_counts(studies).annotate(read=study_read(), dicom_study_date=study_dicom_date())


def study_list_filter(
    studies: QuerySet[Study],
    *,
    query: str = "",
    patient_id: int | None = None,
    status: str = "",
    label: str = "",
    min_probability: float | None = None,
    created_from: datetime.date | None = None,
    created_to: datetime.date | None = None,
    accession_number: str = "",
    model_version_id: int | None = None,
    reading: str = "",
) -> QuerySet[Study]:
    """The one study-list filter: the worklist page and the API's study list both apply it to an
    access-checked queryset. `label`: the study's current AI label (PNEUMONIA when any film is
    suspected), or "awaiting" for studies with no AI result; dates are inclusive; `reading`: "read"
    or "unread" (study_read)."""
    if query := query.strip():
        studies = studies.filter(Q(patient__name__icontains=query) | Q(patient__medical_record_number__icontains=query))
    if patient_id is not None:
        studies = studies.filter(patient_id=patient_id)
    if status:
        studies = studies.filter(status=status)
    # latest_label and latest_probability: the study's current AI result (indexed for triage).
    if label == "awaiting":
        studies = studies.filter(latest_probability__isnull=True)
    elif label:
        studies = studies.filter(latest_label=label)
    if min_probability is not None:
        studies = studies.filter(latest_probability__gte=min_probability)
    if created_from is not None:
        studies = studies.filter(created_at__date__gte=created_from)
    if created_to is not None:
        studies = studies.filter(created_at__date__lte=created_to)
    if accession_number:
        studies = studies.filter(accession_number=accession_number)
    if model_version_id is not None:
        # Only predictions shown to clinicians count: a shadow model's id must not reveal which studies it saw.
        shown = Prediction.objects.filter(
            image__study=OuterRef("pk"), model_version_id=model_version_id, role=Prediction.Role.PRIMARY
        )
        studies = studies.filter(Exists(shown))
    if reading == "read":
        studies = studies.filter(study_read())
    elif reading == "unread":
        studies = studies.filter(~study_read())
    return studies


def _with_results(studies: QuerySet[Study]) -> QuerySet[Study]:
    """Each study's images, the predictions shown to clinicians (newest first) and their readings."""
    predictions = (
        Prediction.objects.filter(role=Prediction.Role.PRIMARY)
        .select_related("model_version")
        .prefetch_related(Prefetch("feedback", queryset=Feedback.objects.select_related("clinician")))
        .order_by("-created_at")
    )
    images = Image.objects.prefetch_related(Prefetch("predictions", queryset=predictions))
    return studies.prefetch_related(Prefetch("images", queryset=images))


def study_get_for_user(*, user: User | AnonymousUser, study_id: int) -> Study:
    """One study with its images, the predictions shown to clinicians (newest first) and their readings."""
    try:
        return _with_results(study_list_for_user(user=user)).get(pk=study_id)
    except (Study.DoesNotExist, ValueError, TypeError):
        raise Http404("No such study.") from None


def study_get_with_results(*, study_id: int) -> Study:
    """As study_get_for_user, for the system acting on the study's own behalf (its webhook): no user."""
    return _with_results(Study.objects.select_related("patient")).get(pk=study_id)


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
    """The study-level conclusion from study_film_results: the same rule as the worklist's result
    (services.studies.study_refresh_latest_result): the highest score among the scored films of the
    model that assessed last; refused films carry no score and are counted, with their reasons, apart."""
    assessed = [film for film in results if film.prediction is not None]
    scored = [film for film in assessed if film.prediction is not None and film.prediction.analysable]
    refusals: dict[str, list[FilmResult]] = {}
    for film in assessed:
        if film.prediction is not None and not film.prediction.analysable:
            refusals.setdefault(film.prediction.gate_reason or "No reason was recorded.", []).append(film)
    top = None
    suspected = 0
    if scored:
        newest = max(scored, key=_assessed_order)
        latest_model = [film for film in scored if _model_id(film) == _model_id(newest)]
        top = max(latest_model, key=lambda film: (_probability(film), -film.number))
        suspected = sum(1 for film in latest_model if _suspected(film))
    if status in (Study.Status.QUEUED, Study.Status.RUNNING, Study.Status.FAILED):
        conclusion = str(status)
    elif top is not None:
        conclusion = "result"
    elif refusals:
        conclusion = "not_analysable"
    else:
        conclusion = "no_result"
    return StudySummary(
        conclusion=conclusion,
        films=len(results),
        scored=len(scored),
        suspected=suspected,
        top=top,
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


def study_taken_on(*, study: Study) -> datetime.date:
    """The day a study's films were taken, as the intended-use check dates a film: the DICOM StudyDate
    (the first of its films that records one), else the day the study was uploaded (local date).
    Reads the study's images as given (prefetched by study_get_for_user)."""
    for image in study.images.all():
        taken = dicom_date((image.dicom_metadata or {}).get("StudyDate"))
        if taken is not None:
            return taken
    return timezone.localdate(study.created_at)


def image_get_for_user(*, user: User | AnonymousUser, image_id: int) -> Image:
    if not user.is_authenticated or user.team_id is None:
        raise Http404("No such image.")
    try:
        return Image.objects.select_related("study__patient").get(pk=image_id, study__patient__team_id=user.team_id)
    except (Image.DoesNotExist, ValueError, TypeError):
        raise Http404("No such image.") from None


def model_version_active() -> ModelVersion | None:
    return ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).first()


def model_version_list() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.all()


def prediction_get_for_user(*, user: User | AnonymousUser, prediction_id: int) -> Prediction:
    """A prediction shown to clinicians (never a shadow one) of the user's team."""
    if not user.is_authenticated or user.team_id is None:
        raise Http404("No such prediction.")
    try:
        return Prediction.objects.select_related("image__study__patient", "model_version").get(
            pk=prediction_id, role=Prediction.Role.PRIMARY, image__study__patient__team_id=user.team_id
        )
    except (Prediction.DoesNotExist, ValueError, TypeError):
        raise Http404("No such prediction.") from None


def model_version_get(*, model_version_id: int) -> ModelVersion:
    try:
        return ModelVersion.objects.get(pk=model_version_id)
    except (ModelVersion.DoesNotExist, ValueError, TypeError):
        raise Http404("No such model version.") from None


def training_run_list() -> QuerySet[TrainingRun]:
    return TrainingRun.objects.select_related("requested_by").prefetch_related("model_versions")


def training_run_get(*, run_id: int) -> TrainingRun:
    try:
        return training_run_list().get(pk=run_id)
    except (TrainingRun.DoesNotExist, ValueError, TypeError):
        raise Http404("No such training run.") from None


def shadow_comparison(*, shadow: ModelVersion, active: ModelVersion) -> dict[str, float | int | None]:
    """How a shadow model's predictions compare with the active model's on the same images."""
    # Films both models scored: a film the gate refused has no probability to compare.
    pairs = list(
        Prediction.objects.filter(
            model_version=shadow,
            outcome=Prediction.Outcome.SCORED,
            image__predictions__model_version=active,
            image__predictions__outcome=Prediction.Outcome.SCORED,
        ).values_list("probability", "label", "image__predictions__probability", "image__predictions__label")
    )
    if not pairs:
        return {
            "images": 0,
            "label_agreement": None,
            "mean_abs_probability_difference": None,
            "shadow_positive_rate": None,
            "active_positive_rate": None,
        }
    return {
        "images": len(pairs),
        "label_agreement": sum(1 for _, s_label, _, a_label in pairs if s_label == a_label) / len(pairs),
        "mean_abs_probability_difference": sum(abs(s - a) for s, _, a, _ in pairs if s is not None and a is not None)
        / len(pairs),
        "shadow_positive_rate": sum(1 for _, s_label, _, _ in pairs if s_label == "PNEUMONIA") / len(pairs),
        "active_positive_rate": sum(1 for _, _, _, a_label in pairs if a_label == "PNEUMONIA") / len(pairs),
    }


# --- API lists (the same access rules; token and delivery reads are for views that checked the caller) ---


def prediction_list_for_user(*, user: User | AnonymousUser) -> QuerySet[Prediction]:
    """The team's predictions shown to clinicians (never shadow ones), newest first."""
    if not user.is_authenticated or user.team_id is None:
        return Prediction.objects.none()
    return Prediction.objects.filter(
        role=Prediction.Role.PRIMARY, image__study__patient__team_id=user.team_id
    ).select_related("image__study", "model_version")


def feedback_list_for_prediction(*, prediction: Prediction) -> QuerySet[Feedback]:
    """Feedback on an access-checked prediction, newest (the current verdict) first."""
    return prediction.feedback.select_related("clinician").order_by("-created_at", "-pk")


def webhook_delivery_list_for_study(*, study: Study) -> QuerySet[WebhookDelivery]:
    """Notifications for an access-checked study, newest first."""
    return study.webhook_deliveries.order_by("-created_at", "-pk")


def pacs_delivery_list_for_study(*, study: Study) -> QuerySet[PacsDelivery]:
    """Results sent back to the PACS of an access-checked study, newest first."""
    return study.pacs_deliveries.select_related("peer").order_by("-created_at", "-pk")


def api_token_list() -> QuerySet[ApiToken]:
    return ApiToken.objects.select_related("user", "team", "created_by")


def api_token_get(*, token_id: int) -> ApiToken:
    try:
        return api_token_list().get(pk=token_id)
    except (ApiToken.DoesNotExist, ValueError, TypeError):
        raise Http404("No such API token.") from None
