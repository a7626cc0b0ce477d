"""A patient's previous study, to read beside the study on screen (the study page's viewer).

"Previous" is by acquisition: the DICOM StudyDate of a study's films, else the day it was uploaded
(a study has no date of its own); on the same day, the one uploaded earlier. Only studies the user
may see are considered (study_list_for_user), so another team's study is never offered.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from django.contrib.auth.models import AnonymousUser
from django.utils import timezone

from diagnostics.models import Study, User

from . import (
    FilmResult,
    StudySummary,
    study_dicom_date,
    study_film_results,
    study_get_for_user,
    study_list_for_user,
    study_summary,
)


@dataclass(frozen=True)
class StudyAcquisition:
    date: datetime.date
    from_dicom: bool  # True: the films' DICOM StudyDate; False: the day the study was uploaded


def study_acquisition(*, dicom_study_date: str | None, created_at: datetime.datetime) -> StudyAcquisition:
    """When a study's films were taken, as far as the portal knows (see study_dicom_date)."""
    try:
        return StudyAcquisition(datetime.datetime.strptime(dicom_study_date or "", "%Y%m%d").date(), True)
    except ValueError:
        local = timezone.localtime(created_at) if timezone.is_aware(created_at) else created_at
        return StudyAcquisition(local.date(), False)


@dataclass(frozen=True)
class PreviousStudy:
    study: Study
    acquired: StudyAcquisition


def study_previous_for_user(*, user: User | AnonymousUser, study: Study) -> PreviousStudy | None:
    """The same patient's study acquired most recently before `study`, among those the user may see;
    None when there is none, or when the user may not see `study` itself."""
    studies = (
        study_list_for_user(user=user)
        .filter(patient_id=study.patient_id)
        .annotate(dicom_study_date=study_dicom_date())
        .order_by()
    )
    keyed: dict[int, tuple[tuple[datetime.date, datetime.datetime, int], PreviousStudy]] = {}
    for row in studies:
        acquired = study_acquisition(dicom_study_date=row.dicom_study_date, created_at=row.created_at)
        keyed[row.pk] = ((acquired.date, row.created_at, row.pk), PreviousStudy(row, acquired))
    if study.pk not in keyed:
        return None
    current, _ = keyed[study.pk]
    earlier = [entry for entry in keyed.values() if entry[0] < current]
    return max(earlier, key=lambda entry: entry[0])[1] if earlier else None


@dataclass(frozen=True)
class Comparison:
    """The previous study as the viewer shows it beside the current one: one film, its result."""

    study: Study
    acquired: StudyAcquisition
    summary: StudySummary
    film: FilmResult  # the study's most suspicious scored film, else its first

    @property
    def film_is_most_suspicious(self) -> bool:
        return self.summary.top is not None and self.summary.top.number == self.film.number


def study_comparison_for_user(*, user: User | AnonymousUser, study: Study) -> Comparison | None:
    """The previous study (study_previous_for_user) with its films and result, for the viewer."""
    previous = study_previous_for_user(user=user, study=study)
    if previous is None:
        return None
    loaded = study_get_for_user(user=user, study_id=previous.study.pk)
    results = study_film_results(study=loaded)
    if not results:
        return None
    summary = study_summary(status=loaded.status, results=results)
    return Comparison(loaded, previous.acquired, summary, summary.top or results[0])
