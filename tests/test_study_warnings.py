"""A study's warnings (selectors.warnings, issue 29 items 4 and 5): a film whose DICOM header disagrees
with the patient record it is filed under, and the patient's age outside the model card's ages (or
unknown), by the record or by the film's own header, on every surface, or refused where a setting says so.

The end-to-end case is issue 29's: an adult's chest film (born 1940, taken 2004, another patient's ID and
name) uploaded to a three-year-old's record. The film is made here (tests/images.py), never read from
../shared/data."""

from __future__ import annotations

import datetime
import io
import json
import re

import pytest
from django.urls import reverse
from django.utils import timezone
from pydicom.uid import generate_uid

from diagnostics.integrations.fhir.services import study_fhir_report
from diagnostics.integrations.webhooks.services import _study_payload
from diagnostics.models import AuditEvent, Patient, Study
from diagnostics.selectors import study_get_for_user
from diagnostics.selectors.warnings import (
    AGE_UNKNOWN,
    OUTSIDE_INTENDED_USE,
    WRONG_PATIENT,
    FilmAge,
    dicom_header_mismatches,
    film_age,
    film_intended_use_warning,
    names_agree,
    study_warnings,
)
from diagnostics.services.inference import study_run_inference

from .conftest import api_client_for, login_client
from .factories import ModelVersionFactory, PatientFactory, PredictionFactory, StudyFactory
from .images import cr_film_bytes, jpeg_bytes

TODAY = datetime.date(2026, 12, 7)


def record(**fields: object) -> Patient:
    """A patient row in memory: the rules read its fields only."""
    values = {"medical_record_number": "MRN-A-1", "name": "Ada Lovelace", "birth_date": datetime.date(2023, 6, 1),
              "sex": Patient.Sex.FEMALE} | fields  # fmt: skip
    return Patient(**values)


def adult_film_of_another_patient(**overrides: str) -> bytes:
    """Issue 29's film: an adult's chest CR (born 5 Mar 1940, taken 26 Aug 2004) of patient 9RG1."""
    fields = {"patient_id": "9RG1", "patient_name": "CompressedSamples^RG1", "birth_date": "19400305",
              "study_date": "20040826", "sex": "F"} | overrides  # fmt: skip
    return cr_film_bytes(study_uid=generate_uid(), **fields)  # type: ignore[arg-type]


# --- the comparison rules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("film", "record_name", "agree"),
    [
        ("LOVELACE^ADA", "Ada Lovelace", True),  # DICOM order and separators, case
        ("Lovelace^Ada^King", "Ada Lovelace", True),  # a middle name on one side only
        ("  lovelace ^ ada ", "Ada  Lovelace", True),
        ("Lovelacé^Ada", "Ada Lovelace", True),  # accents
        ("Lovelace^Ada=ラブレス^エイダ", "Ada Lovelace", True),  # only the alphabetic group
        ("", "Ada Lovelace", True),  # missing: not a difference
        ("CompressedSamples^RG1", "Ada Lovelace", False),
        ("Byron^Ada", "Ada Lovelace", False),
        ("Ada", "Ada Lovelace", False),  # one word is not enough to call it the same person
    ],
)
def test_names_agree_ignoring_case_separators_and_order(film, record_name, agree):
    assert names_agree(film, record_name) is agree


def test_the_header_is_compared_field_by_field_with_the_record():
    patient = record()
    agreeing = {"PatientID": "  MRN-A-1 ", "PatientName": "LOVELACE^ADA", "PatientBirthDate": "20230601",
                "PatientSex": "F", "StudyDate": "20250101"}  # fmt: skip
    assert dicom_header_mismatches(patient=patient, metadata=agreeing) == []
    found = dicom_header_mismatches(
        patient=patient,
        metadata={
            "PatientID": "9RG1",
            "PatientName": "CompressedSamples^RG1",
            "PatientBirthDate": "19400305",
            "PatientSex": "M",
            "StudyDate": "20040826",
        },  # fmt: skip
    )
    assert [(m.field, m.film, m.record) for m in found] == [
        ("patient_id", "9RG1", "MRN-A-1"),
        ("name", "CompressedSamples RG1", "Ada Lovelace"),
        ("birth_date", "5 Mar 1940", "1 Jun 2023"),
        ("sex", "M", "F"),
        ("study_date", "26 Aug 2004", "1 Jun 2023"),
    ]


@pytest.mark.parametrize(
    ("metadata", "sex"),
    [
        ({}, "F"),  # a JPEG or PNG: no header
        ({"PatientID": "", "PatientName": "", "PatientBirthDate": "", "PatientSex": ""}, "F"),  # all missing
        ({"PatientSex": "O"}, "F"),  # other / unknown are never a difference
        ({"PatientSex": "M"}, "U"),
        ({"PatientSex": "M"}, "O"),
        ({"PatientBirthDate": "1940"}, "F"),  # malformed: as missing
    ],
)
def test_a_missing_or_unknown_value_is_never_a_difference(metadata, sex):
    assert dicom_header_mismatches(patient=record(sex=sex), metadata=metadata) == []


# --- the intended-use age, by the record and by the film's header -------------------------------------


@pytest.mark.parametrize(
    ("metadata", "born", "expected"),
    [
        ({}, datetime.date(2023, 6, 1), FilmAge(record=3.5, header=None)),  # the upload day
        ({"StudyDate": "20240601"}, datetime.date(2023, 6, 1), FilmAge(record=1.0, header=None)),
        ({"StudyDate": "20240531"}, datetime.date(2023, 6, 1), FilmAge(record=11 / 12, header=None)),
        ({"PatientAge": "045Y"}, datetime.date(2023, 6, 1), FilmAge(record=3.5, header=45.0)),
        (
            {"PatientBirthDate": "19400305", "StudyDate": "20040826"},
            datetime.date(2023, 6, 1),
            FilmAge(record=None, header=773 / 12),
        ),  # fmt: skip
    ],
)
def test_the_age_when_the_film_was_taken(metadata, born, expected):
    age = film_age(patient=record(birth_date=born), metadata=metadata, uploaded_on=TODAY)
    assert age.record == pytest.approx(expected.record) if expected.record is not None else age.record is None
    assert age.header == pytest.approx(expected.header) if expected.header is not None else age.header is None


def test_either_age_outside_the_intended_ages_warns_and_neither_known_says_unknown():
    child = record()
    assert film_intended_use_warning(patient=child, metadata={}, uploaded_on=TODAY) == ""
    by_header = film_intended_use_warning(patient=child, metadata={"PatientAge": "045Y"}, uploaded_on=TODAY)
    assert by_header.startswith("Outside intended use: When the film was taken the patient was 45 years old by")
    assert "its DICOM header" in by_header and "patient's record" not in by_header
    baby = film_intended_use_warning(patient=record(birth_date=datetime.date(2026, 6, 1)), metadata={},
                                     uploaded_on=TODAY)  # fmt: skip
    assert "6 months old by the patient's record" in baby and "children aged 1 to 5" in baby
    unknown = film_intended_use_warning(patient=child, metadata={"StudyDate": "20040826"}, uploaded_on=TODAY)
    assert unknown.startswith("Age unknown: Neither the patient's record nor its DICOM header gives")
    # One age known and inside, the other unknown: nothing to warn about.
    assert film_intended_use_warning(patient=record(), metadata={"PatientAge": "3Y"}, uploaded_on=TODAY) == ""


# --- the study's warnings, and the adult film end to end -----------------------------------------------


@pytest.fixture
def toddler(team, owner) -> Patient:
    """A three-year-old girl whose record the adult film is uploaded to."""
    born = timezone.localdate() - datetime.timedelta(days=3 * 365 + 40)
    return PatientFactory(team=team, created_by=owner, name="Ada Lovelace", medical_record_number="MRN-A-1",
                          birth_date=born, sex=Patient.Sex.FEMALE)  # fmt: skip


def text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


@pytest.mark.django_db
def test_the_adult_film_of_another_patient_is_warned_about_on_every_surface(owner, toddler, active_model):
    from pypdf import PdfReader

    client = login_client(owner)
    upload = io.BytesIO(adult_film_of_another_patient())
    upload.name = "adult.dcm"
    response = client.post(reverse("study_new", args=[toddler.pk]), {"modality": "CR", "images": [upload]})
    assert response.status_code == 302  # the default is to warn, not to refuse
    study = Study.objects.get()
    study_run_inference(study_id=study.pk)
    study.refresh_from_db()
    assert study.status == Study.Status.DONE and study.latest_probability is not None

    loaded = study_get_for_user(user=owner, study_id=study.pk)
    wrong, outside = study_warnings(study=loaded)
    assert (wrong.code, outside.code) == (WRONG_PATIENT, OUTSIDE_INTENDED_USE)
    assert wrong.mismatched_fields == ("patient_id", "name", "birth_date", "study_date")
    assert wrong.message.startswith("The film's DICOM header disagrees with the record of Ada Lovelace (MRN-A-1): ")
    assert "patient ID 9RG1 (record: MRN-A-1)" in wrong.message and "birth date 5 Mar 1940" in wrong.message
    assert outside.message.startswith("When the film was taken the patient was 64 years old by its DICOM header")
    for warning in (wrong, outside):
        assert warning.title[0].isupper() and warning.message[0].isupper()
    [image] = study.images.all()
    assert image.dicom_metadata["PatientBirthDate"] == "19400305"
    # The film's own warning, from the same rule.
    assert "64 years old by its DICOM header" in image.predictions.get().intended_use_warning

    # The study page: both warnings in the result box, before the result.
    page = client.get(reverse("study_detail", args=[study.pk])).content.decode()
    box = page[page.index('class="card study-summary"') : page.index("</section>", page.index("study-summary"))]
    assert box.index("Film may be of another patient.") < box.index("Outside intended use.") < box.index("suspected")
    assert "patient ID 9RG1 (record: MRN-A-1)" in text(box)
    # The worklist row (the study's row in the table, not the "Read the next unread study" link above it).
    worklist = client.get(reverse("worklist")).content.decode()
    row = worklist[worklist.index(f'data-row-link href="{reverse("study_detail", args=[study.pk])}') :]
    row = row[: row.index("</tr>")]
    assert "Film may be of another patient" in row and "Outside intended use" in row
    # Page 1 of the PDF.
    pdf = PdfReader(io.BytesIO(client.get(reverse("study_report", args=[study.pk])).content))
    first = " ".join(pdf.pages[0].extract_text().split())
    assert "Film may be of another patient." in first and "Outside intended use." in first
    assert "64 years old by its DICOM header" in first
    # The API: the study, and the list.
    api = api_client_for(owner)
    body = api.get(reverse("api_study_detail", kwargs={"study_id": study.pk})).json()
    assert [w["code"] for w in body["warnings"]] == [WRONG_PATIENT, OUTSIDE_INTENDED_USE]
    assert body["warnings"][0]["mismatched_fields"] == ["patient_id", "name", "birth_date", "study_date"]
    assert body["warnings"][0]["image_ids"] == [image.pk] and body["no_result_reason"] is None
    [listed] = api.get(reverse("api_study_list")).json()["results"]
    assert listed["warnings"] == body["warnings"]
    # The webhook's payload and the FHIR DiagnosticReport.
    payload = json.loads(json.dumps(_study_payload(study)))
    assert payload["warnings"] == body["warnings"]
    conclusion = study_fhir_report(study=loaded, base_url="https://portal.example")["conclusion"]
    assert "Warning: Film may be of another patient." in conclusion and "Warning: Outside intended use." in conclusion
    # Recorded when it was stored, with the fields and no values.
    event = AuditEvent.objects.get(action="study.patient_mismatch_warned")
    assert event.object_id == str(study.pk)
    assert event.detail == {"images": [image.pk], "fields": ["patient_id", "name", "birth_date", "study_date"]}


@pytest.mark.django_db
def test_where_the_setting_says_so_the_upload_is_refused_with_the_fields_that_differ(settings, owner, toddler):
    settings.DICOM_PATIENT_MISMATCH = "refuse"
    client = login_client(owner)
    film = io.BytesIO(adult_film_of_another_patient())
    film.name = "adult.dcm"
    good = io.BytesIO(jpeg_bytes())
    good.name = "child.jpeg"
    response = client.post(reverse("study_new", args=[toddler.pk]), {"modality": "CR", "images": [film, good]})
    assert response.status_code == 400
    page = text(response.content.decode())
    assert "adult.dcm: its DICOM header disagrees with the record of Ada Lovelace (MRN-A-1): patient ID 9RG1" in page
    assert "Nothing was stored" in page
    assert not Study.objects.exists()
    event = AuditEvent.objects.get(action="study.refused_patient_mismatch")
    assert event.detail == {"files": 1, "fields": ["patient_id", "name", "birth_date", "study_date"]}

    # The API says the same, under `images`.
    api = api_client_for(owner)
    film.seek(0)
    answer = api.post(reverse("api_study_list"), {"patient_id": toddler.pk, "images": [film]}, format="multipart")
    assert answer.status_code == 400
    [message] = answer.json()["error"]["fields"]["images"]
    assert "birth date 5 Mar 1940 (record: " in message and not Study.objects.exists()

    # A film of this patient goes through.
    own = cr_film_bytes(patient_id="MRN-A-1", study_uid=generate_uid(), patient_name="LOVELACE^ADA",
                        birth_date=toddler.birth_date.strftime("%Y%m%d"), study_date="")  # fmt: skip
    assert StudyFactory(created_by=owner, patient=toddler, films=[("own.dcm", own)]).pk


@pytest.mark.django_db
def test_a_study_of_several_films_names_the_films_concerned(owner, toddler):
    own = cr_film_bytes(patient_id="MRN-A-1", study_uid=generate_uid(), patient_name="Lovelace^Ada",
                        birth_date=toddler.birth_date.strftime("%Y%m%d"), study_date="")  # fmt: skip
    study = StudyFactory(created_by=owner, patient=toddler, films=[
        ("own.dcm", own), ("a.dcm", adult_film_of_another_patient()), ("b.dcm", adult_film_of_another_patient()),
    ])  # fmt: skip
    warnings = study_warnings(study=study_get_for_user(user=owner, study_id=study.pk))
    assert [w.code for w in warnings] == [WRONG_PATIENT, OUTSIDE_INTENDED_USE]
    assert warnings[0].title == "Films may be of another patient"
    assert warnings[0].message.startswith("The DICOM header of images 2 and 3 disagree with the record")
    assert warnings[1].message.startswith("When image 2 was taken the patient was 64 years old by image 2's DICOM")
    assert len(warnings[0].image_ids) == 2


@pytest.mark.django_db
def test_a_film_taken_before_the_birth_date_with_no_age_in_its_header_says_age_unknown(owner, toddler):
    film = cr_film_bytes(patient_id="MRN-A-1", study_uid=generate_uid(), patient_name="", birth_date="",
                         study_date="20040826")  # fmt: skip
    study = StudyFactory(created_by=owner, patient=toddler, films=[("old.dcm", film)])
    wrong, unknown = study_warnings(study=study_get_for_user(user=owner, study_id=study.pk))
    assert wrong.mismatched_fields == ("study_date",) and "it was taken on 26 Aug 2004, before" in wrong.message
    assert unknown.code == AGE_UNKNOWN and unknown.title == "Age unknown"
    assert unknown.message.startswith("Neither the patient's record nor its DICOM header gives the patient's age")


@pytest.mark.django_db
def test_a_six_month_old_is_outside_intended_use_on_the_worklist_and_the_webhook(owner, team):
    baby = PatientFactory(team=team, created_by=owner, birth_date=timezone.localdate() - datetime.timedelta(days=190))
    study = StudyFactory(created_by=owner, patient=baby)  # a JPEG: the age by the record, on the upload day
    PredictionFactory(study=study, model_version=ModelVersionFactory(), probability=1.0, finish_study=True)
    study.refresh_from_db()
    [warning] = study_warnings(study=study)
    assert warning.code == OUTSIDE_INTENDED_USE
    assert warning.message.startswith("When the film was taken the patient was 6 months old by the patient's record")
    row = login_client(owner).get(reverse("worklist")).content.decode()
    assert "Pneumonia suspected" in row and "row-warning-outside_intended_use" in row
    assert _study_payload(study)["warnings"][0]["title"] == "Outside intended use"


@pytest.mark.django_db
def test_a_study_of_this_childs_films_has_no_warning(owner, toddler):
    study = StudyFactory(created_by=owner, patient=toddler)
    assert study_warnings(study=study) == []
    assert "row-warning" not in login_client(owner).get(reverse("worklist")).content.decode()
