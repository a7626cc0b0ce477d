"""FHIR searches over the caller's team's studies (access-checked through study_list_for_user)."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from diagnostics.models import Study, User
from diagnostics.selectors import study_get_for_user, study_list_for_user

from .services import DICOM_UID_SYSTEM, SEARCH_PARAMETERS, study_effective

DEFAULT_COUNT, MAX_COUNT = 20, 100
STATUS_OF = {"preliminary": Study.Status.DONE, "cancelled": Study.Status.FAILED}
PREFIXES = ("eq", "ge", "gt", "le", "lt")


class FhirSearchError(ValueError):
    """A search the endpoint cannot answer as asked: 400 with an OperationOutcome saying why."""


@dataclass(frozen=True)
class DateBound:
    prefix: str
    start: datetime.datetime  # the search value as a range [start, end) in the portal's time zone
    end: datetime.datetime

    def admits(self, moment: datetime.datetime) -> bool:
        return {
            "eq": self.start <= moment < self.end,
            "ge": moment >= self.start,
            "gt": moment >= self.end,
            "le": moment < self.end,
            "lt": moment < self.start,
        }[self.prefix]


def _token(value: str) -> tuple[str | None, str]:
    """'system|value' -> (system, value); '|value' -> ('', value); 'value' -> (None, value): any system."""
    if "|" in value:
        system, _, code = value.partition("|")
        return system, code
    return None, value


def _date_bound(raw: str) -> DateBound:
    prefix = raw[:2] if raw[:2] in PREFIXES else "eq"
    text = raw[2:] if raw[:2] in PREFIXES else raw
    zone = timezone.get_default_timezone()
    try:
        if len(text) == 4:
            start = datetime.datetime(int(text), 1, 1, tzinfo=zone)
            end = start.replace(year=start.year + 1)
        elif len(text) == 7:
            start = datetime.datetime.strptime(text, "%Y-%m").replace(tzinfo=zone)
            end = (start + datetime.timedelta(days=32)).replace(day=1)
        elif len(text) == 10:
            start = datetime.datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=zone)
            end = start + datetime.timedelta(days=1)
        else:
            start = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
            if timezone.is_naive(start):
                raise ValueError("a date with a time needs its offset")
            end = start + datetime.timedelta(seconds=1)
    except ValueError as error:
        raise FhirSearchError(f"date={raw}: not a FHIR date or dateTime ({error}).") from None
    return DateBound(prefix, start, end)


def _moment(value: datetime.datetime | datetime.date) -> datetime.datetime:
    if isinstance(value, datetime.datetime):
        return value
    return datetime.datetime.combine(value, datetime.time(), tzinfo=timezone.get_default_timezone())


def _patient_filter(name: str, values: Sequence[str]) -> Q:
    query = Q()
    for value in values:
        if name == "patient.identifier":
            system, mrn = _token(value)
            if system is not None and system != settings.FHIR_MRN_SYSTEM:
                return Q(pk__in=[])  # the MRNs are in another system: nothing matches
            query &= Q(patient__medical_record_number=mrn)
        else:
            reference = value.removeprefix("Patient/")
            if not reference.startswith("patient-") or not reference[8:].isdigit():
                raise FhirSearchError(f"{name}={value}: a Patient reference is Patient/patient-<id>.")
            query &= Q(patient_id=int(reference[8:]))
    return query


def _identifier_filter(values: Sequence[str]) -> Q:
    query = Q()
    for value in values:
        system, code = _token(value)
        matches = Q(pk__in=[])
        if system in (None, settings.FHIR_ACCESSION_SYSTEM) and code:
            matches |= Q(accession_number=code)
        if system in (None, settings.FHIR_REPORT_ID_SYSTEM) and settings.FHIR_REPORT_ID_SYSTEM and code.isdigit():
            matches |= Q(pk=int(code))
        if system in (None, DICOM_UID_SYSTEM) and code.startswith("urn:oid:"):
            matches |= Q(pacs_deliveries__sop_instance_uid=code[8:], pacs_deliveries__kind="sr")
        query &= matches
    return query


def fhir_report_search_for_user(*, user: User, params: Mapping[str, Sequence[str]]) -> list[Study]:
    """The team's studies a DiagnosticReport search names, newest first, each from study_get_for_user.

    A search must name a patient or an identifier (a hospital asks about one patient or one order); the
    date is compared with when the films were taken (fhir.services.study_effective), so it is applied to the
    patient's or order's studies after the database narrows them."""
    unknown = sorted(set(params) - set(SEARCH_PARAMETERS) - {"_format"})
    if unknown:
        raise FhirSearchError(f"Unsupported search parameter(s): {', '.join(unknown)}. Supported: "
                              f"{', '.join(SEARCH_PARAMETERS)} (GET /fhir/metadata).")  # fmt: skip
    if not any(params.get(name) for name in ("patient.identifier", "patient", "subject", "identifier")):
        raise FhirSearchError("A search needs patient.identifier, patient, subject or identifier.")
    studies: QuerySet[Study] = study_list_for_user(user=user)
    for name in ("patient.identifier", "patient", "subject"):
        if params.get(name):
            studies = studies.filter(_patient_filter(name, params[name]))
    if params.get("identifier"):
        studies = studies.filter(_identifier_filter(params["identifier"]))
    for status in params.get("status", []):
        wanted = [STATUS_OF.get(code) for code in status.split(",")]
        if "registered" in status.split(","):
            wanted += [Study.Status.QUEUED, Study.Status.RUNNING]
        studies = studies.filter(status__in=[code for code in wanted if code])
    bounds = [_date_bound(raw) for raw in params.get("date", [])]
    count = _count(params.get("_count", []))
    found = []
    for study_id in studies.order_by("-created_at", "-pk").values_list("pk", flat=True).distinct():
        study = study_get_for_user(user=user, study_id=study_id)
        moment = _moment(study_effective(study)[0])
        if all(bound.admits(moment) for bound in bounds):
            found.append(study)
            if len(found) == count:
                break
    return found


def _count(values: Sequence[str]) -> int:
    if not values:
        return DEFAULT_COUNT
    if not values[-1].isdigit():
        raise FhirSearchError(f"_count={values[-1]}: a whole number.")
    return max(1, min(MAX_COUNT, int(values[-1])))
