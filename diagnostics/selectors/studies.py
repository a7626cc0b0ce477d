"""A care team's studies: the worklist's queries, its filter and one study with its results."""

from __future__ import annotations

import datetime

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
    clinician acknowledged one of its films the input gate refused ("seen: no AI result", Acknowledgement):
    a refused film has no AI label to agree with, so acknowledging it is how its study is closed.
    A condition for filter() (negate it with ~) and for annotate(read=study_read_annotation())."""
    readings = Feedback.objects.filter(
        prediction__image__study=OuterRef("pk"), prediction__role=Prediction.Role.PRIMARY
    )
    acknowledged = Acknowledgement.objects.filter(
        prediction__image__study=OuterRef("pk"), prediction__role=Prediction.Role.PRIMARY
    )
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


def study_taken_on(*, study: Study) -> datetime.date:
    """The day a study's films were taken, as the intended-use check dates a film: the DICOM StudyDate
    (the first of its films that records one), else the day the study was uploaded (local date).
    Reads the study's images as given (prefetched by study_get_for_user)."""
    for image in study.images.all():
        taken = dicom_date((image.dicom_metadata or {}).get("StudyDate"))
        if taken is not None:
            return taken
    return timezone.localdate(study.created_at)
