"""A DICOM header in words (issue 17, finding 11): field names as the standard writes them, dates as
'26 Aug 2004', ages as '4 years', on the study page's DICOM information and the upload's inspection panel."""

from __future__ import annotations

import re
from html import unescape

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from diagnostics.formatting.words import dicom_age_words, dicom_facts
from ml.training.nonchest import dicom_file

from .conftest import HTMX, login_client
from .factories import StudyFactory
from .images import chest_like_pixels

HEADER = {
    "PatientID": "MRN-A-1",
    "PatientAge": "004Y",
    "StudyDate": "20040826",
    "Modality": "CR",
    "ViewPosition": "PA",
    "BodyPartExamined": "CHEST",
    "SeriesDescription": "Chest PA",
}


def test_each_field_is_named_and_its_value_written_in_words():
    facts = [(fact.label, fact.value) for fact in dicom_facts({**HEADER, "StudyInstanceUID": "1.2.3"})]
    assert facts == [
        ("Patient ID", "MRN-A-1"),
        ("Patient's age", "4 years"),
        ("Study date", "26 Aug 2004"),
        ("Modality", "CR (computed radiography)"),
        ("View position", "PA (posteroanterior)"),
        ("Body part examined", "Chest"),
        ("Series description", "Chest PA"),
        ("Study instance UID", "1.2.3"),
    ]


@pytest.mark.parametrize(
    ("value", "words"),
    [("004Y", "4 years"), ("001Y", "1 year"), ("018M", "18 months"), ("003W", "3 weeks"), ("010D", "10 days"),
     ("4Y", "4Y"), ("", "")],
)  # fmt: skip
def test_a_dicom_age_in_words(value, words):
    assert dicom_age_words(value) == words


def test_odd_values_are_shown_as_they_are_and_missing_ones_only_when_asked():
    facts = dicom_facts({"StudyDate": "2004-08-26", "ViewPosition": "LL", "Modality": "CT", "SeriesNumber": "3",
                         "StudyTime": "101500"})  # fmt: skip
    assert [(fact.label, fact.value) for fact in facts] == [
        ("Study date", "2004-08-26"),
        ("Study time", "10:15:00"),
        ("Modality", "CT (computed tomography)"),
        ("View position", "LL (lateral)"),
        ("Series number", "3"),
    ]
    assert [(f.label, f.value) for f in dicom_facts({}, always=["StudyDate"])] == [("Study date", "not recorded")]


def _dicom(**tags: str) -> bytes:
    return dicom_file(chest_like_pixels(64).astype(np.uint16) * 16, **{**HEADER, **tags})


def _facts(html: str, section: str) -> dict[str, str]:
    part = html[html.index(section) :]
    part = part[: part.index("</dl>")]
    return {unescape(key): unescape(value) for key, value in re.findall(r"<dt>([^<]+)</dt><dd>([^<]*)", part)}


@pytest.mark.django_db
def test_the_study_pages_dicom_information_is_in_words(owner, patient):
    study = StudyFactory(created_by=owner, patient=patient, films=[("film.dcm", _dicom())])
    html = login_client(owner).get(reverse("study_detail", args=[study.pk])).content.decode()
    facts = _facts(html, "<summary>DICOM information</summary>")
    assert facts["Study date"] == "26 Aug 2004" and facts["Patient's age"] == "4 years"
    assert facts["View position"] == "PA (posteroanterior)" and facts["Body part examined"] == "Chest"
    assert "<dt>StudyDate</dt>" not in html and "20040826" not in html


@pytest.mark.django_db
def test_the_upload_inspection_panel_is_in_words(owner, patient):
    upload = SimpleUploadedFile("film.dcm", _dicom(ViewPosition="AP"), content_type="application/dicom")
    url = reverse("study_inspect_dicom", args=[patient.pk])
    html = login_client(owner).post(url, {"images": [upload]}, **HTMX).content.decode()
    facts = _facts(html, '<dl class="facts">')
    assert facts["Study date"] == "26 Aug 2004" and facts["Patient's age"] == "4 years"
    assert facts["View position"] == "AP (anteroposterior)" and facts["Modality"] == "CR (computed radiography)"
    assert 'data-view-position="AP" data-modality="CR"' in html  # the offer keeps the codes the form takes
