"""What a study's AI result must be read with: the warnings a study's films and its patient record give.

One place decides them (``study_warnings``); the study page's result box, the worklist row, page 1 of the
PDF, the API, the webhook, FHIR and the Structured Report sent to the PACS all call it, and the upload
refusal (services.studies) and the inference worker's film-level warning use the same rules:

- ``wrong_patient``: a film's DICOM header disagrees with the record of the patient the study belongs to
  (``dicom_header_mismatches``: patient ID, name, birth date, sex), or the film was taken before that
  patient was born. A value missing on either side is never a difference.
- ``outside_intended_use``: the patient's age when a film was taken is outside the model card's ages
  (ml.serving.gate), by the record (birth date at the film's date) or by the film's own header (PatientAge, else
  its PatientBirthDate at its StudyDate), whichever is outside.
- ``age_unknown``: neither the record nor the header gives an age for a film.

Every sentence starts with a capital letter and reads on its own (API and webhook clients show it as is).
No query beyond ``study.images.all()`` and ``study.patient``: prefetch the images for a list
(``study_list_with_warning_facts``).
"""

from __future__ import annotations

import datetime
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db.models import Prefetch, QuerySet
from django.utils import timezone
from django.utils.dateformat import format as format_date

from diagnostics.formatting.words import DATE_FORMAT, dicom_date
from diagnostics.models import Image, Patient, Study
from ml.serving.gate import INTENDED_AGE_YEARS, dicom_age_years, intended_use_warning

WRONG_PATIENT = "wrong_patient"
OUTSIDE_INTENDED_USE = "outside_intended_use"
AGE_UNKNOWN = "age_unknown"
WARNING_CODES = {
    WRONG_PATIENT: "A film's DICOM header disagrees with the patient record",
    OUTSIDE_INTENDED_USE: "The patient's age is outside the model card's ages",
    AGE_UNKNOWN: "Neither the record nor the header gives the patient's age",
}
MISMATCH_FIELDS = {
    "patient_id": "Patient ID",
    "name": "Name",
    "birth_date": "Birth date",
    "sex": "Sex",
    "study_date": "Study date before the record's birth date",
}

# The DICOM header fields compared with the patient record (Image.dicom_metadata keeps them).
IDENTITY_TAGS = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex")


@dataclass(frozen=True)
class FieldMismatch:
    """One way a film's DICOM header disagrees with the patient record."""

    field: str  # patient_id | name | birth_date | sex | study_date
    film: str  # the header's value, in words
    record: str  # the record's value, in words

    @property
    def words(self) -> str:
        if self.field == "study_date":
            return f"it was taken on {self.film}, before the record's birth date ({self.record})"
        label = "patient ID" if self.field == "patient_id" else MISMATCH_FIELDS[self.field].lower()
        return f"{label} {self.film} (record: {self.record})"


@dataclass(frozen=True)
class StudyWarning:
    """A warning a study's AI result is shown with, on every surface."""

    code: str  # wrong_patient | outside_intended_use | age_unknown
    title: str  # a few words, capitalised: the worklist row shows only this
    message: str  # whole sentences, each starting with a capital letter
    image_ids: tuple[int, ...] = ()  # the films it concerns
    mismatched_fields: tuple[str, ...] = ()  # wrong_patient: the fields that differ (FieldMismatch.field)

    def as_dict(self) -> dict[str, Any]:
        """As the API and the webhook give it (api.warnings.StudyWarningSerializer describes it)."""
        return {
            "code": self.code,
            "title": self.title,
            "message": self.message,
            "image_ids": list(self.image_ids),
            "mismatched_fields": list(self.mismatched_fields),
        }


# --- wrong patient ---------------------------------------------------------------------------------


def _name_tokens(name: str) -> list[str]:
    """A person's name as comparable words: DICOM's '^' components and spaces split alike, accents and
    case ignored; of a DICOM PN only the first (alphabetic) group counts ('=' starts the others)."""
    text = unicodedata.normalize("NFKD", name.split("=")[0])
    text = "".join(char for char in text if not unicodedata.combining(char)).casefold()
    return sorted(token for token in re.split(r"[\s^,.]+", text) if token)


def names_agree(film: str, record: str) -> bool:
    """The same words in any order; or one name holds all of the other's words when that one has at least
    two (a middle name on one side only is not another patient). A missing name agrees with anything."""
    a, b = _name_tokens(film), _name_tokens(record)
    if not a or not b or a == b:
        return True
    smaller, larger = (a, b) if len(a) <= len(b) else (b, a)
    return len(smaller) >= 2 and all(smaller.count(token) <= larger.count(token) for token in smaller)


def _day(value: datetime.date) -> str:
    return format_date(value, DATE_FORMAT)


def _display_name(dicom_name: str) -> str:
    return " ".join(part for part in re.split(r"[\^]+", dicom_name.split("=")[0]) if part.strip()).strip()


def dicom_header_mismatches(*, patient: Patient, metadata: Mapping[str, Any] | None) -> list[FieldMismatch]:
    """How a film's DICOM header (Image.dicom_metadata) disagrees with `patient`'s record: patient ID
    (trimmed), name (names_agree), birth date (exact), sex (M or F on both sides), and a study date
    before the record's birth date. Empty when they agree, or for a film with no header (JPEG, PNG)."""
    metadata = metadata or {}
    found = []
    film_id = str(metadata.get("PatientID", "") or "").strip()
    if film_id and patient.medical_record_number.strip() and film_id != patient.medical_record_number.strip():
        found.append(FieldMismatch("patient_id", film_id, patient.medical_record_number.strip()))
    film_name = str(metadata.get("PatientName", "") or "")
    if not names_agree(film_name, patient.name):
        found.append(FieldMismatch("name", _display_name(film_name), patient.name))
    film_birth = dicom_date(metadata.get("PatientBirthDate"))
    if film_birth is not None and patient.birth_date is not None and film_birth != patient.birth_date:
        found.append(FieldMismatch("birth_date", _day(film_birth), _day(patient.birth_date)))
    film_sex = str(metadata.get("PatientSex", "") or "").strip().upper()
    known = (Patient.Sex.MALE, Patient.Sex.FEMALE)
    if film_sex in known and patient.sex in known and film_sex != patient.sex:
        found.append(FieldMismatch("sex", film_sex, str(patient.sex)))
    taken = dicom_date(metadata.get("StudyDate"))
    if taken is not None and patient.birth_date is not None and taken < patient.birth_date:
        found.append(FieldMismatch("study_date", _day(taken), _day(patient.birth_date)))
    return found


def mismatch_sentence(mismatches: Sequence[FieldMismatch]) -> str:
    """'patient ID 9RG1 (record: MRN-1); birth date 5 Mar 1940 (record: 1 Jun 2023)'."""
    return "; ".join(mismatch.words for mismatch in mismatches)


# --- intended use ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FilmAge:
    """The patient's age in years when a film was taken, by the record and by the film's header."""

    record: float | None
    header: float | None


def _years_between(born: datetime.date, on: datetime.date) -> float | None:
    """Whole months lived, in years (a child one day short of a birthday has not reached it)."""
    months = (on.year - born.year) * 12 + on.month - born.month - (on.day < born.day)
    return months / 12 if months >= 0 else None


def film_taken_on(*, metadata: Mapping[str, Any] | None, uploaded_on: datetime.date) -> datetime.date:
    """The film's DICOM StudyDate, else the day it was uploaded (as selectors.study_taken_on)."""
    return dicom_date((metadata or {}).get("StudyDate")) or uploaded_on


def film_age(*, patient: Patient, metadata: Mapping[str, Any] | None, uploaded_on: datetime.date) -> FilmAge:
    metadata = metadata or {}
    taken = film_taken_on(metadata=metadata, uploaded_on=uploaded_on)
    record = _years_between(patient.birth_date, taken) if patient.birth_date is not None else None
    header = dicom_age_years(str(metadata.get("PatientAge", "") or ""))
    header_birth, header_taken = dicom_date(metadata.get("PatientBirthDate")), dicom_date(metadata.get("StudyDate"))
    if header is None and header_birth is not None and header_taken is not None:
        header = _years_between(header_birth, header_taken)
    return FilmAge(record=record, header=header)


def outside_intended_ages(years: float | None) -> bool:
    """The model card's rule (ml.serving.gate.intended_use_warning): an unknown age is not outside."""
    return years is not None and bool(intended_use_warning(years))


def age_words(years: float) -> str:
    if years >= 2:
        return f"{int(years)} years"
    months = round(years * 12)
    if months >= 1:
        return f"{months} month{'s' if months != 1 else ''}"
    days = round(years * 365.25)
    return f"{days} day{'s' if days != 1 else ''}"


def _intended_ages() -> str:
    low, high = INTENDED_AGE_YEARS
    return f"children aged {low} to {high}"


def intended_use_sentence(age: FilmAge, *, film: str, header: str) -> str:
    """'When the film was taken the patient was 64 years old by its DICOM header; the AI …', or '' when
    neither age is outside the intended ages. `film`: how the film is named; `header`: its header's name."""
    ages = []
    if outside_intended_ages(age.record):
        assert age.record is not None
        ages.append(f"{age_words(age.record)} old by the patient's record")
    if outside_intended_ages(age.header):
        assert age.header is not None
        ages.append(f"{age_words(age.header)} old by {header}")
    if not ages:
        return ""
    return (
        f"When {film} was taken the patient was {' and '.join(ages)}; the AI was made and validated for "
        f"{_intended_ages()}. Read this result with extra caution."
    )


def age_unknown_sentence(*, film: str, header: str) -> str:
    return (
        f"Neither the patient's record nor {header} gives the patient's age when {film} was taken, so it "
        f"cannot be checked against the ages the AI was made and validated for ({_intended_ages()}). "
        "Read this result with extra caution."
    )


def film_intended_use_warning(
    *, patient: Patient, metadata: Mapping[str, Any] | None, uploaded_on: datetime.date
) -> str:
    """A film's own warning (Prediction.intended_use_warning, stored by the inference worker): 'Outside
    intended use: …' or 'Age unknown: …', '' inside the intended ages."""
    age = film_age(patient=patient, metadata=metadata, uploaded_on=uploaded_on)
    outside = intended_use_sentence(age, film="the film", header="its DICOM header")
    if outside:
        return f"Outside intended use: {outside}"
    if age.record is None and age.header is None:
        return f"Age unknown: {age_unknown_sentence(film='the film', header='its DICOM header')}"
    return ""


# --- the study's warnings ----------------------------------------------------------------------------


def _images(numbers: Sequence[int]) -> str:
    """'image 2', 'images 1 and 3', 'images 1, 2 and 4'."""
    if len(numbers) == 1:
        return f"image {numbers[0]}"
    return "images " + ", ".join(str(n) for n in numbers[:-1]) + f" and {numbers[-1]}"


def study_warnings(*, study: Study) -> list[StudyWarning]:
    """The study's warnings, wrong patient first. Reads study.patient and study.images.all() (prefetched
    by study_get_for_user and study_list_with_warning_facts)."""
    patient = study.patient
    uploaded_on = timezone.localdate(study.created_at) if timezone.is_aware(study.created_at) else study.created_at
    images = list(study.images.all())
    mismatched: dict[str, list[tuple[int, Image, list[FieldMismatch]]]] = {}
    outside: list[tuple[int, Image, FilmAge]] = []
    unknown: list[tuple[int, Image]] = []
    for number, image in enumerate(images, start=1):
        metadata = image.dicom_metadata or {}
        mismatches = dicom_header_mismatches(patient=patient, metadata=metadata)
        if mismatches:
            mismatched.setdefault(mismatch_sentence(mismatches), []).append((number, image, mismatches))
        age = film_age(patient=patient, metadata=metadata, uploaded_on=uploaded_on)
        if outside_intended_ages(age.record) or outside_intended_ages(age.header):
            outside.append((number, image, age))
        elif age.record is None and age.header is None:
            unknown.append((number, image))
    warnings = []
    if mismatched:
        warnings.append(_wrong_patient(patient, mismatched, several=len(images) > 1))
    if outside:
        number, _, age = outside[0]
        film = f"image {number}" if len(images) > 1 else "the film"
        header = f"image {number}'s DICOM header" if len(images) > 1 else "its DICOM header"
        warnings.append(
            StudyWarning(
                code=OUTSIDE_INTENDED_USE,
                title="Outside intended use",
                message=intended_use_sentence(age, film=film, header=header),
                image_ids=tuple(image.pk for _, image, _ in outside),
            )
        )
    if unknown:
        numbers = [number for number, _ in unknown]
        film = _images(numbers) if len(images) > 1 else "the film"
        header = f"the DICOM header of {_images(numbers)}" if len(images) > 1 else "its DICOM header"
        warnings.append(
            StudyWarning(
                code=AGE_UNKNOWN,
                title="Age unknown",
                message=age_unknown_sentence(film=film, header=header),
                image_ids=tuple(image.pk for _, image in unknown),
            )
        )
    return warnings


def _wrong_patient(
    patient: Patient, mismatched: dict[str, list[tuple[int, Image, list[FieldMismatch]]]], *, several: bool
) -> StudyWarning:
    sentences = []
    fields: list[str] = []
    image_ids: list[int] = []
    for differences, films in mismatched.items():
        numbers = [number for number, _, _ in films]
        whose = f"The DICOM header of {_images(numbers)}" if several else "The film's DICOM header"
        verb = "disagree" if len(numbers) > 1 else "disagrees"
        sentences.append(
            f"{whose} {verb} with the record of {patient.name} ({patient.medical_record_number}): {differences}."
        )
        for _, image, mismatches in films:
            image_ids.append(image.pk)
            fields.extend(m.field for m in mismatches if m.field not in fields)
    films_word = "films" if len(image_ids) > 1 else "film"
    sentences.append(f"The {films_word} may be of another patient: check before using the AI result.")
    return StudyWarning(
        code=WRONG_PATIENT,
        title="Films may be of another patient" if len(image_ids) > 1 else "Film may be of another patient",
        message=" ".join(sentences),
        image_ids=tuple(sorted(image_ids)),
        mismatched_fields=tuple(fields),
    )


def study_list_with_warning_facts(studies: QuerySet[Study]) -> QuerySet[Study]:
    """What study_warnings reads for each row of a list: the patient and each film's header, one query for
    the rows a page shows (not the films' files or predictions)."""
    films = Image.objects.only("id", "study_id", "dicom_metadata", "created_at").order_by("created_at", "pk")
    return studies.select_related("patient").prefetch_related(Prefetch("images", queryset=films))
