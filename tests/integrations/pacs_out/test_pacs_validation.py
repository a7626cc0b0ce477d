"""Every object the portal sends a PACS passes dicom3tools' `dciodvfy` without an error (issue 32 item 1), carries
the disclaimer and the study's warnings in its content (SR) or its pixels (SC), and a writer's failure is a
recorded failed attempt, never a delivery left pending with nothing said (issue 31, a film without
AccessionNumber)."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from diagnostics.integrations.pacs_out import services as pacs_results
from diagnostics.integrations.pacs_out.services import CAPTION, PRIVATE_SCHEME
from diagnostics.models import AuditEvent, PacsDelivery, Prediction, Study
from diagnostics.selectors.warnings import study_warnings
from diagnostics.services.inference import study_run_inference

from ...conftest import require_tool
from ...images import cr_film_bytes
from ..dicom import receive

pytestmark = pytest.mark.django_db


def without(data: bytes, *keywords: str) -> bytes:
    """A film as a PACS sends it when some attributes are missing altogether."""
    dataset = pydicom.dcmread(io.BytesIO(data))
    for keyword in keywords:
        delattr(dataset, keyword)
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


def make_normal(peer, patient) -> list[bytes]:  # noqa: ANN001
    return [cr_film_bytes(patient_id="MRN-N", study_uid=generate_uid())]


def make_two_films(peer, patient) -> list[bytes]:  # noqa: ANN001
    uid = generate_uid()
    return [cr_film_bytes(patient_id="MRN-T", study_uid=uid, seed=s) for s in (0, 1)]


def make_wrong_patient_outside_ages(peer, patient) -> list[bytes]:  # noqa: ANN001
    # The known patient's MRN with another person's name and a birth date 80 years back.
    return [cr_film_bytes(patient_id=patient.medical_record_number, study_uid=generate_uid(),
                          patient_name="Other^Person", birth_date="19400305", study_date="20040826")]  # fmt: skip


def make_no_accession(peer, patient) -> list[bytes]:  # noqa: ANN001
    # A film with no AccessionNumber, StudyID or PatientOrientation at all (PACSes send such films).
    film = cr_film_bytes(patient_id="MRN-X", study_uid=generate_uid())
    return [without(film, "AccessionNumber", "StudyID", "PatientOrientation")]


def force_pneumonia(study: Study) -> None:
    Prediction.objects.filter(image__study=study).update(label=Prediction.Label.PNEUMONIA, probability=0.93)


def force_not_analysable(study: Study) -> None:
    Prediction.objects.filter(image__study=study).update(
        outcome=Prediction.Outcome.NOT_ANALYSABLE, probability=None, label="", gate_code="not_chest_xray",
        gate_reason="The film does not look like a chest X-ray (the input gate's score 0.03 is under 0.5).",
    )  # fmt: skip


def force_viral_pneumonia(study: Study) -> None:
    """A pneumonia with the AI's bacterial-or-viral suggestion (the bundled model has a subtype head)."""
    Prediction.objects.filter(image__study=study).update(
        label=Prediction.Label.PNEUMONIA, probability=0.93, subtype_probability=0.97
    )


def force_normal(study: Study) -> None:
    Prediction.objects.filter(image__study=study).update(label=Prediction.Label.NORMAL, probability=0.04)


CASES = {
    "normal": (make_normal, force_normal, set()),
    "pneumonia_two_films": (make_two_films, force_pneumonia, set()),
    "not_analysable": (make_normal, force_not_analysable, set()),
    "wrong_patient_outside_ages": (make_wrong_patient_outside_ages, force_pneumonia,
                                   {"wrong_patient", "outside_intended_use"}),
    "no_accession": (make_no_accession, force_normal, set()),
    "pneumonia_subtype": (make_normal, force_viral_pneumonia, set()),
}  # fmt: skip


def sent_objects(peer, patient, case: str, monkeypatch) -> tuple[Study, list[tuple[PacsDelivery, object]]]:  # noqa: ANN001
    make, force, expected_warnings = CASES[case]
    studies = receive(peer, *make(peer, patient))
    [study] = studies
    study_run_inference(study_id=study.pk)
    force(study)
    study.refresh_from_db()
    assert study.status == Study.Status.DONE, study.failure_reason
    assert {w.code for w in study_warnings(study=study)} == expected_warnings
    sent: list = []
    monkeypatch.setattr(pacs_results, "_c_store", lambda study, items: sent.extend(items) or {})
    pacs_results.pacs_send_results(study_id=study.pk, final=True)
    assert [d.status for d in PacsDelivery.objects.filter(study=study)] == ["delivered"] * len(sent)
    return study, sent


def dciodvfy_errors(dataset, path: Path) -> list[str]:  # noqa: ANN001
    """dciodvfy's Error lines for `dataset` written as a Part 10 file (warnings, e.g. the private coding
    scheme's designator it does not know, are not errors)."""
    dataset.save_as(path, enforce_file_format=True)
    checked = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False, timeout=60)
    return [line for line in (checked.stdout + checked.stderr).splitlines() if "Error" in line]


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_object_sent_passes_dciodvfy_and_says_what_it_is(case, peer, patient, active_model, tmp_path,
                                                               monkeypatch):  # fmt: skip
    import highdicom as hd

    require_tool(shutil.which("dciodvfy"), "dicom3tools (dciodvfy)")
    study, sent = sent_objects(peer, patient, case, monkeypatch)
    warnings = study_warnings(study=study)
    films = study.images.count()
    assert sorted(d.kind for d, _ in sent) == ["sc"] * films + ["sr"]

    for delivery, dataset in sent:
        errors = dciodvfy_errors(dataset, tmp_path / f"{delivery.kind}-{delivery.pk}.dcm")
        assert errors == [], f"{case} {delivery.kind}: {errors}"
        assert dataset.StudyInstanceUID == study.study_instance_uid and dataset.SeriesDescription == CAPTION
        assert str(dataset.AccessionNumber) == study.accession_number  # empty when the film has none

    [(_, sr)] = [(d, ds) for d, ds in sent if d.kind == "sr"]
    observer = next(item for item in sr.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "121012")
    assert observer.UID == pacs_results.DEVICE_OBSERVER_UID  # one device across reports (TID 1004)
    [scheme] = sr.CodingSchemeIdentificationSequence
    assert scheme.CodingSchemeDesignator == PRIVATE_SCHEME and scheme.CodingSchemeName
    buffer = io.BytesIO()
    sr.save_as(buffer)
    read = hd.sr.srread(io.BytesIO(buffer.getvalue()))
    assert len(read.content.get_image_measurement_groups()) == films
    # The root's Qualitative Evaluations container: the disclaimer, then each warning in whole sentences.
    [statements] = [item for item in read.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "C0034375"]
    texts = [item.TextValue for item in statements.ContentSequence]
    assert texts[0].startswith(f"{CAPTION}. Intended use:")
    assert texts[1:] == [f"Warning: {w.title}. {w.message}" for w in warnings]

    for delivery, sc in sent:
        if delivery.kind != "sc":
            continue
        assert sc.BurnedInAnnotation == "YES" and sc.BodyPartExamined == "CHEST" and "Laterality" not in sc
        assert sc.PatientOrientation == ("" if case == "no_accession" else ["L", "F"])
        # The caption band above the film: yellow text (the caption, the intended use, the warnings).
        band = sc.pixel_array[: sc.Rows - sc.Columns]  # the test films are square
        assert (band.reshape(-1, 3) == [255, 255, 0]).all(axis=1).any()


def test_the_subtype_suggestion_is_a_measurement_and_a_coded_evaluation_of_the_films_group(
    peer, patient, active_model, tmp_path, monkeypatch
):
    import highdicom as hd

    require_tool(shutil.which("dciodvfy"), "dicom3tools (dciodvfy)")
    assert active_model.subtype, "the bundled model has a subtype head"
    _, sent = sent_objects(peer, patient, "pneumonia_subtype", monkeypatch)
    [(delivery, sr)] = [(d, ds) for d, ds in sent if d.kind == "sr"]
    assert dciodvfy_errors(sr, tmp_path / "sr.dcm") == []
    buffer = io.BytesIO()
    sr.save_as(buffer)
    [group] = hd.sr.srread(io.BytesIO(buffer.getvalue())).content.get_image_measurement_groups()
    values = {m.name.value: m.value for m in group.get_measurements()}
    # Named a probability under the main score's rule only (its cross-fitted calibration error within 0.05).
    assert values["p-viral" if active_model.subtype["probability_calibrated"] else "viral-score"] == pytest.approx(0.97)
    assert values["subtype-acc"] == pytest.approx(active_model.subtype["expected_accuracy"], abs=1e-4)
    evaluations = {e.name.value: e.value.value for e in group.get_qualitative_evaluations()}
    assert evaluations["ai-subtype"] == "75570004"  # viral pneumonia, SNOMED CT


def test_the_warnings_are_burned_in_whole_above_the_film(peer, patient, active_model, monkeypatch):
    """With the wrong-patient and intended-use warnings the band holds their sentences (it is taller than the
    same capture's band without them) and the film below it is the film, not covered."""
    study, sent = sent_objects(peer, patient, "wrong_patient_outside_ages", monkeypatch)
    [(_, sc)] = [(d, ds) for d, ds in sent if d.kind == "sc"]
    prediction = Prediction.objects.get(image__study=study)
    warnings = study_warnings(study=study)
    lines = pacs_results.caption_lines(prediction, warnings, detailed=True)
    assert any(warnings[0].message in line for line in lines) and any(warnings[1].message in line for line in lines)
    bare = pacs_results.caption_lines(prediction, (), detailed=True)
    film = sc.pixel_array[sc.Rows - sc.Columns :]
    plain = pacs_results.captioned_pixels(film, bare)
    assert sc.Rows - sc.Columns > plain.shape[0] - film.shape[0] + 3 * 18  # several more lines of text
    assert (plain[plain.shape[0] - film.shape[0] :] == film).all()


def test_a_writer_failure_is_a_recorded_failed_attempt_with_its_error(peer, active_model, monkeypatch):
    """Issue 31: a film without AccessionNumber broke the SR writer (AttributeError) and the delivery stayed
    pending with 0 attempts. Now it goes out; and any exception a writer raises is that delivery's failed
    attempt, with the error, retried, then failed at the last attempt, while the other objects go."""
    from diagnostics.integrations.pacs_out.services import PacsNotDelivered

    film = without(cr_film_bytes(patient_id="MRN-W", study_uid=generate_uid()), "AccessionNumber")
    [study] = receive(peer, film)
    study_run_inference(study_id=study.pk)
    sent: list = []
    monkeypatch.setattr(pacs_results, "_c_store", lambda study, items: sent.extend(items) or {})

    real = pacs_results.build_structured_report

    def broken(**kwargs):  # noqa: ANN003, ANN202
        raise AttributeError("'FileDataset' object has no attribute 'AccessionNumber'")

    monkeypatch.setattr(pacs_results, "build_structured_report", broken)
    with pytest.raises(PacsNotDelivered):
        pacs_results.pacs_send_results(study_id=study.pk, final=False)
    sr, sc = PacsDelivery.objects.filter(study=study).order_by("pk")
    assert (sr.kind, sr.status, sr.attempts) == ("sr", "pending", 1)
    assert sr.last_error == (
        "could not build the Structured Report: AttributeError: 'FileDataset' object has no attribute 'AccessionNumber'"
    )
    assert (sc.status, sc.attempts, sc.last_error) == ("delivered", 1, "")  # the capture went
    events = AuditEvent.objects.filter(action="pacs.attempt_failed")
    assert [e.detail["error"] for e in events] == [sr.last_error]

    pacs_results.pacs_send_results(study_id=study.pk, final=True)  # the last attempt, still broken
    sr.refresh_from_db()
    assert (sr.status, sr.attempts) == ("failed", 2) and "AttributeError" in sr.last_error

    # The real writer: the film without AccessionNumber gives an SR with an empty one (Type 2).
    monkeypatch.setattr(pacs_results, "build_structured_report", real)
    PacsDelivery.objects.filter(pk=sr.pk).update(status="pending")
    pacs_results.pacs_send_results(study_id=study.pk, final=True)
    sr.refresh_from_db()
    assert (sr.status, sr.attempts, sr.last_error) == ("delivered", 3, "")
    [(_, report)] = [(d, ds) for d, ds in sent if d.kind == "sr"]
    assert report.AccessionNumber == "" and report.StudyInstanceUID == study.study_instance_uid


def test_a_report_revised_for_a_later_film_names_the_report_it_replaces(peer, active_model, tmp_path, monkeypatch):
    """The PACS sends one more film after the results went: the new SR covers both films, names the first SR
    (already stored) in its Predecessor Documents Sequence, and passes dciodvfy."""
    require_tool(shutil.which("dciodvfy"), "dicom3tools (dciodvfy)")
    uid = generate_uid()
    sent: list = []
    monkeypatch.setattr(pacs_results, "_c_store", lambda study, items: sent.extend(items) or {})
    [study] = receive(peer, cr_film_bytes(patient_id="MRN-R", study_uid=uid, seed=0))
    study_run_inference(study_id=study.pk)
    pacs_results.pacs_send_results(study_id=study.pk, final=True)
    [(first, first_sr)] = [(d, ds) for d, ds in sent if d.kind == "sr"]
    assert "PredecessorDocumentsSequence" not in first_sr

    sent.clear()
    receive(peer, cr_film_bytes(patient_id="MRN-R", study_uid=uid, seed=1))
    study_run_inference(study_id=study.pk)
    pacs_results.pacs_send_results(study_id=study.pk, final=True)
    [(second, revised)] = [(d, ds) for d, ds in sent if d.kind == "sr"]
    assert second.pk != first.pk and revised.InstanceNumber == 2
    [study_item] = revised.PredecessorDocumentsSequence
    [series_item] = study_item.ReferencedSeriesSequence
    [instance_item] = series_item.ReferencedSOPSequence
    assert study_item.StudyInstanceUID == uid and series_item.SeriesInstanceUID == revised.SeriesInstanceUID
    assert instance_item.ReferencedSOPInstanceUID == first.sop_instance_uid
    assert dciodvfy_errors(revised, tmp_path / "revised.dcm") == []
