"""A care team's studies: the worklist's queries, its filter and one study with its results."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from django.contrib.auth.models import AnonymousUser
from django.db.models import (
    BooleanField,
    CharField,
    Count,
    Exists,
    ExpressionWrapper,
    IntegerField,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
)
from django.db.models.fields.json import KT
from django.db.models.functions import Coalesce
from django.http import Http404
from django.utils import timezone

from diagnostics.formatting.words import dicom_date
from diagnostics.models import (
    Acknowledgement,
    Feedback,
    Image,
    Prediction,
    Study,
    User,
)


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


def study_read_exists() -> Q:
    """Whether a study has been read, the one owner of the rule: a clinician's reading (Feedback: agreeing
    with or correcting the AI) exists on an assessment shown to clinicians of any of its films, or a
    clinician acknowledged one of its films the input gate refused, or the study itself when its analysis
    failed or left it without a scored film ("seen: no AI result", Acknowledgement): such a study has no AI
    label to agree with, so acknowledging it is how it is closed.
    A condition for filter() (negate it with ~) and for annotate(read=study_read_annotation())."""
    readings = Feedback.objects.filter(
        prediction__image__study=OuterRef("pk"), prediction__role=Prediction.Role.PRIMARY
    )
    # A film's acknowledgement is of an assessment shown to clinicians (services.feedback refuses others);
    # a study's own (prediction empty) is of a study the AI left without any scored film.
    acknowledged = Acknowledgement.objects.filter(study=OuterRef("pk"))
    return Q(Exists(readings)) | Q(Exists(acknowledged))


def study_read_annotation() -> ExpressionWrapper:
    """study_read_exists as a boolean column (the worklist's `read`, the API's `read`)."""
    return ExpressionWrapper(study_read_exists(), output_field=BooleanField())


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
    """What a worklist row shows besides the study itself: `film_count`, `read` (study_read_exists) and
    `dicom_study_date` (study_dicom_date; the row falls back to the upload date), each a correlated
    subquery of the list's own query, computed only for the rows a page shows."""
    return study_list_with_film_counts(studies).annotate(
        read=study_read_annotation(), dicom_study_date=study_dicom_date()
    )


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
    or "unread" (study_read_exists)."""
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
        studies = studies.filter(study_read_exists())
    elif reading == "unread":
        studies = studies.filter(~study_read_exists())
    return studies


def _with_results(studies: QuerySet[Study]) -> QuerySet[Study]:
    """Each study's images, the predictions shown to clinicians (newest first) and their readings."""
    predictions = (
        Prediction.objects.filter(role=Prediction.Role.PRIMARY)
        .select_related("model_version")
        .prefetch_related(
            Prefetch("feedback", queryset=Feedback.objects.select_related("clinician")),
            Prefetch("acknowledgements", queryset=Acknowledgement.objects.select_related("clinician")),
        )
        .order_by("-created_at", "-pk")
    )
    images = Image.objects.prefetch_related(Prefetch("predictions", queryset=predictions))
    acknowledgements = Acknowledgement.objects.select_related("clinician").order_by("-created_at", "-pk")
    return studies.prefetch_related(
        Prefetch("images", queryset=images), Prefetch("acknowledgements", queryset=acknowledgements)
    )


def study_get_for_user(*, user: User | AnonymousUser, study_id: int) -> Study:
    """One study with its images, the predictions shown to clinicians (newest first) and their readings."""
    try:
        return _with_results(study_list_for_user(user=user)).get(pk=study_id)
    except (Study.DoesNotExist, ValueError, TypeError):
        raise Http404("No such study.") from None


@dataclass(frozen=True)
class NoAiResultWaiting:
    """What 'seen: no AI result' would acknowledge on a study (study_no_ai_result_waiting)."""

    films: list[Prediction]  # refused films (their newest assessment shown to clinicians) nobody acknowledged
    whole_study: bool  # no scored film, some film (or the study) without any assessment, not acknowledged
    scored: bool  # some film has a score: it is read with a reading, not acknowledged

    def __bool__(self) -> bool:
        return bool(self.films) or self.whole_study


def _newest_shown(image: Image) -> Prediction | None:
    shown = [p for p in image.predictions.all() if p.role == Prediction.Role.PRIMARY]
    return max(shown, key=lambda p: (p.created_at, p.pk), default=None)


def study_no_ai_result_waiting(*, study: Study) -> NoAiResultWaiting:
    """The films and study 'seen: no AI result' is waiting for, on a study from study_get_for_user (its
    images and their assessments prefetched): nothing while the study is queued or running."""
    if study.status in (Study.Status.QUEUED, Study.Status.RUNNING):
        return NoAiResultWaiting(films=[], whole_study=False, scored=False)
    newest = [_newest_shown(image) for image in study.images.all()]
    scored = any(p is not None and p.analysable for p in newest)
    unassessed = not newest or any(p is None for p in newest)
    whole_study = unassessed and not scored and not any(a.prediction_id is None for a in study.acknowledgements.all())
    films = [p for p in newest if p is not None and not p.analysable and not p.acknowledgements.all()]
    return NoAiResultWaiting(films=films, whole_study=whole_study, scored=scored)


def study_acknowledgement_of_the_study(*, study: Study) -> Acknowledgement | None:
    """The newest 'seen: no AI result' of the study as a whole (not of one of its films), if any."""
    return next((a for a in study.acknowledgements.all() if a.prediction_id is None), None)


def acknowledgement_list_for_study(*, study: Study) -> QuerySet[Acknowledgement]:
    """Every 'seen: no AI result' of a study from study_get_for_user, its films' and its own, newest first."""
    return study.acknowledgements.select_related("clinician").order_by("-created_at", "-pk")


def study_get_with_results(*, study_id: int) -> Study:
    """As study_get_for_user, for the system acting on the study's own behalf (its webhook): no user."""
    return _with_results(Study.objects.select_related("patient")).get(pk=study_id)


def study_taken_on(*, study: Study) -> datetime.date:
    """The day a study's films were taken, as the intended-use check dates a film: the DICOM StudyDate
    (the first of its films that records one), else the day the study was uploaded (local date).
    Reads the study's images as given (prefetched by study_get_for_user)."""
    for image in study.images.all():
        taken = dicom_date((image.dicom_metadata or {}).get("StudyDate"))
        if taken is not None:
            return taken
    return timezone.localdate(study.created_at)
