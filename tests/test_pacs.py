"""Films from a PACS over DICOM (diagnostics/services/pacs.py), results back as DICOM SR and Secondary
Capture (pacs_results.py), and the FHIR DiagnosticReport. The real PACS round trip is in
tests/test_pacs_orthanc.py."""

from __future__ import annotations

import datetime
import io
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from pydicom.uid import generate_uid

from diagnostics.models import AuditEvent, DicomPeer, Image, Patient, Prediction, Study, User
from diagnostics.selectors import study_get_for_user
from diagnostics.services.inference import study_run_inference
from diagnostics.services.pacs import (
    pacs_association_folder,
    pacs_check_instance,
    pacs_inbox_write,
    pacs_ingest_inbox,
    pacs_ingest_leftovers,
    pacs_peer_for,
)
from diagnostics.services.pacs_results import CAPTION, build_secondary_capture, build_structured_report

from .conftest import api_client_for
from .factories import UserFactory
from .images import cr_film_bytes, jpeg_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def inbox(settings, tmp_path) -> Path:
    settings.DICOM_INBOX_DIR = tmp_path / "inbox"
    return settings.DICOM_INBOX_DIR


@pytest.fixture
def peer(team) -> DicomPeer:
    service = UserFactory(username="ward-pacs", team=team, role=User.Role.API_CLIENT)
    return DicomPeer.objects.create(
        ae_title="WARDPACS", team=team, service_user=service, host="127.0.0.1", port=4242, results_ae_title="ORTHANC"
    )


def receive(peer: DicomPeer, *films: bytes) -> list[Study]:
    """What the receiver does for one association: check and keep each film, then file them."""
    folder = pacs_association_folder(peer=peer)
    for data in films:
        pacs_check_instance(peer=peer, data=data)
        pacs_inbox_write(association=folder, data=data)
    return pacs_ingest_inbox(peer=peer, association=folder)


def actions() -> list[str]:
    return list(AuditEvent.objects.order_by("pk").values_list("action", flat=True))


def test_an_associations_films_become_one_study_of_a_patient_registered_from_the_header(peer, inbox):
    uid = generate_uid()
    first = cr_film_bytes(patient_id="MRN-9", study_uid=uid, seed=0)
    [study] = receive(peer, first, cr_film_bytes(patient_id="MRN-9", study_uid=uid, seed=1))

    assert (study.study_instance_uid, study.dicom_peer, study.images.count()) == (uid, peer, 2)
    assert study.accession_number == "ACC-PACS-1" and study.modality == "CR" and study.view_position == "PA"
    assert study.created_by == peer.service_user and study.status == Study.Status.QUEUED
    patient = study.patient
    assert (patient.team, patient.medical_record_number, patient.name) == (peer.team, "MRN-9", "Doe Sam")
    assert patient.birth_date == datetime.date(2022, 3, 1) and patient.sex == "F"
    assert {"patient.created_from_dicom", "study.created", "dicom.study_received"} <= set(actions())
    assert not list(inbox.rglob("*.dcm")), "filed films leave the inbox"

    # The PACS sends one again: acknowledged, filed once.
    assert receive(peer, first) == []
    assert Image.objects.count() == 2 and "dicom.instances_resent" in actions()

    # A later film of the same study joins it (and the finished study would be assessed again).
    Study.objects.filter(pk=study.pk).update(status=Study.Status.DONE)
    [same] = receive(peer, cr_film_bytes(patient_id="MRN-9", study_uid=uid, seed=2))
    same.refresh_from_db()
    assert same.pk == study.pk and same.images.count() == 3 and same.status == Study.Status.QUEUED
    assert Patient.objects.count() == 1 and "study.images_added" in actions()


def test_a_known_patient_is_matched_by_medical_record_number_in_the_peers_team(peer, patient, other_team):
    [study] = receive(peer, cr_film_bytes(patient_id=patient.medical_record_number, study_uid=generate_uid()))
    assert study.patient == patient and Patient.objects.count() == 1
    # The same MRN in another team is another patient: never matched across teams.
    assert patient.team != other_team


@pytest.mark.parametrize(
    ("film", "message"),
    [
        (lambda: cr_film_bytes(patient_id="", study_uid=generate_uid()), "no PatientID"),
        (lambda: cr_film_bytes(patient_id="NEW-1", study_uid=generate_uid(), birth_date=""), "no PatientBirthDate"),
        (lambda: jpeg_bytes(), "Not a readable DICOM file"),
    ],
)
def test_a_film_the_portal_cannot_file_is_refused_while_the_sender_waits(peer, film, message):
    with pytest.raises(ValidationError, match=message):
        pacs_check_instance(peer=peer, data=film())
    assert not Study.objects.exists()


def test_only_registered_enabled_peers_are_heard(peer):
    assert pacs_peer_for(ae_title="WARDPACS ") == peer
    assert pacs_peer_for(ae_title="STRANGER") is None
    DicomPeer.objects.filter(pk=peer.pk).update(enabled=False)
    assert pacs_peer_for(ae_title="WARDPACS") is None


def test_films_a_crash_left_in_the_inbox_are_filed_at_the_next_start(peer, inbox):
    folder = pacs_association_folder(peer=peer)
    data = cr_film_bytes(patient_id="MRN-7", study_uid=generate_uid())
    pacs_check_instance(peer=peer, data=data)
    pacs_inbox_write(association=folder, data=data)
    (inbox / folder / "half-written.part").write_bytes(b"DICM")  # never acknowledged
    assert not Study.objects.exists()  # the receiver died before the association ended

    assert pacs_ingest_leftovers() == 1
    assert Study.objects.get().images.count() == 1
    assert not any(inbox.iterdir())


@pytest.mark.slow
def test_results_are_a_structured_report_and_captioned_captures_in_the_studys_uid(peer, active_model):
    import highdicom as hd

    uid = generate_uid()
    [study] = receive(peer, *(cr_film_bytes(patient_id="MRN-5", study_uid=uid, seed=s) for s in (0, 1)))
    study_run_inference(study_id=study.pk)
    study.refresh_from_db()
    assert study.status == Study.Status.DONE, study.failure_reason
    films = [(image, image.predictions.get()) for image in study.images.order_by("pk")]

    sr = build_structured_report(films=films, sop_instance_uid=generate_uid(), series_uid=generate_uid())
    buffer = io.BytesIO()
    sr.save_as(buffer)
    read = hd.sr.srread(io.BytesIO(buffer.getvalue()))
    assert read.StudyInstanceUID == uid and read.Modality == "SR" and read.SeriesDescription == CAPTION
    groups = read.content.get_image_measurement_groups()
    assert len(groups) == 2
    for group, (image, prediction) in zip(groups, films, strict=True):
        [evaluation] = group.get_qualitative_evaluations()
        expected = "Present" if prediction.label == Prediction.Label.PNEUMONIA else "Absent"
        assert evaluation.name.meaning == "Pneumonia" and evaluation.value.meaning == expected
        score = group.get_measurements()[0]
        assert score.value == pytest.approx(prediction.probability, abs=1e-4)
        assert group.source_images[0].referenced_sop_instance_uid == image.sop_instance_uid

    assert active_model.name.partition("@")[0].encode() in buffer.getvalue()  # the algorithm's name

    image, prediction = films[0]
    sc = build_secondary_capture(image=image, prediction=prediction, sop_instance_uid=generate_uid(),
                                 series_uid=generate_uid(), instance_number=1)  # fmt: skip
    assert sc.StudyInstanceUID == uid and sc.PatientID == "MRN-5" and sc.BurnedInAnnotation == "YES"
    pixels = sc.pixel_array
    assert pixels.ndim == 3 and pixels.shape[2] == 3
    # The caption band is burned into the top rows: yellow text on black.
    band = pixels[: pixels.shape[0] // 12]
    assert (band.reshape(-1, 3) == [255, 255, 0]).all(axis=1).any()


def test_a_study_reads_as_a_valid_fhir_r4_diagnostic_report(peer, active_model, owner, outsider):
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport

    peer.team = owner.team
    uid = generate_uid()
    [study] = receive(peer, cr_film_bytes(patient_id="MRN-4", study_uid=uid))
    study_run_inference(study_id=study.pk)
    url = reverse("api_study_fhir", args=[study.pk])

    response = api_client_for(owner).get(url, HTTP_ACCEPT="application/fhir+json")
    assert response.status_code == 200 and response["Content-Type"].startswith("application/fhir+json")
    body = response.json()
    report = DiagnosticReport.model_validate(body)
    assert report.status == "preliminary" and report.code.coding[0].code == "18748-4"
    [imaging_study, observation] = body["contained"]
    assert imaging_study["identifier"][0]["value"] == f"urn:oid:{uid}"
    prediction = Prediction.objects.get()
    assert observation["code"]["coding"][0]["code"] == "233604007"
    assert observation["valueQuantity"]["value"] == pytest.approx(prediction.probability, abs=1e-4)
    assert observation["interpretation"][0]["coding"][0]["code"] == (
        "POS" if prediction.label == "PNEUMONIA" else "NEG"
    )
    assert "not a diagnosis" in body["conclusion"]
    assert api_client_for(outsider).get(url).status_code == 404
    assert study_get_for_user(user=owner, study_id=study.pk) == study


def test_results_go_at_once_with_the_heatmap_then_retry_an_unreachable_pacs_and_record_the_failure(peer, active_model):
    from diagnostics.models import PacsDelivery
    from diagnostics.services.pacs_results import PacsNotDelivered, caption_lines, pacs_send_results

    [study] = receive(peer, cr_film_bytes(patient_id="MRN-3", study_uid=generate_uid()))
    study_run_inference(study_id=study.pk)
    prediction = Prediction.objects.get(image__study=study)
    assert prediction.analysable and prediction.heatmap  # stored with the prediction: nothing to wait for
    assert "heatmap not available" not in " ".join(caption_lines(prediction))

    DicomPeer.objects.filter(pk=peer.pk).update(port=9)  # nothing listens there
    with pytest.raises(PacsNotDelivered):
        pacs_send_results(study_id=study.pk, final=False)
    deliveries = list(PacsDelivery.objects.filter(study=study).order_by("pk"))
    assert [d.kind for d in deliveries] == ["sr", "sc"]
    assert all(d.status == "pending" and d.attempts == 1 and "refused or failed" in d.last_error for d in deliveries)
    uids = [d.sop_instance_uid for d in deliveries]

    pacs_send_results(study_id=study.pk, final=True)  # the last attempt: recorded, no raise
    deliveries = list(PacsDelivery.objects.filter(study=study).order_by("pk"))
    assert [d.status for d in deliveries] == ["failed", "failed"] and [d.attempts for d in deliveries] == [2, 2]
    assert [d.sop_instance_uid for d in deliveries] == uids  # a retry sends the same instances
    assert actions().count("pacs.failed") == 2 and actions().count("pacs.attempt_failed") == 2

    owner = UserFactory(team=peer.team)
    listed = api_client_for(owner).get(reverse("api_study_pacs_deliveries", args=[study.pk])).json()["results"]
    assert [(d["kind"], d["status"], d["attempts"], d["peer"]) for d in listed] == [
        ("sc", "failed", 2, "WARDPACS"),
        ("sr", "failed", 2, "WARDPACS"),
    ]


def test_films_sent_after_the_results_get_their_captures_and_a_new_report(peer, active_model):
    from diagnostics.models import PacsDelivery
    from diagnostics.services.pacs_results import _deliveries, _films

    uid = generate_uid()
    [study] = receive(peer, cr_film_bytes(patient_id="MRN-2", study_uid=uid, seed=0))
    study_run_inference(study_id=study.pk)
    first = _deliveries(study, _films(study))
    assert [d.kind for d in first] == ["sr", "sc"]
    PacsDelivery.objects.filter(study=study).update(status="delivered")
    assert _deliveries(study, _films(study)) == first  # nothing new: the same rows, the same UIDs

    receive(peer, cr_film_bytes(patient_id="MRN-2", study_uid=uid, seed=1))  # the PACS sends one more
    study_run_inference(study_id=study.pk)
    rows = _deliveries(study, _films(study))
    assert [(d.kind, d.status) for d in rows] == [("sr", "delivered"), ("sc", "delivered"), ("sr", "pending"),
                                                  ("sc", "pending")]  # fmt: skip


def test_a_film_that_disagrees_with_the_known_patient_is_filed_with_a_warning_in_its_results(
    peer, patient, active_model, settings, monkeypatch, tmp_path
):
    """Issue 29 item 4: a PACS's film is filed under the patient its PatientID names; when its name and birth
    date are another person's, the study carries the wrong-patient warning (never refused: the film was
    acknowledged), and so do the Structured Report and the captions sent back."""
    import shutil
    import subprocess

    import highdicom as hd
    from pydicom.sr.codedict import codes

    from diagnostics.selectors.warnings import study_warnings
    from diagnostics.services import pacs_results
    from diagnostics.services.pacs_results import caption_lines

    settings.DICOM_PATIENT_MISMATCH = "refuse"  # uploads only: a PACS's films are warned about
    film = cr_film_bytes(patient_id="MRN-A-1", study_uid=generate_uid(), patient_name="Doe^Sam",
                         birth_date="19400305", study_date="20040826")  # fmt: skip
    [study] = receive(peer, film)
    assert study.patient == patient
    study_run_inference(study_id=study.pk)
    study.refresh_from_db()
    assert study.status == Study.Status.DONE, study.failure_reason
    wrong, outside = study_warnings(study=study)
    assert wrong.mismatched_fields == ("name", "birth_date", "study_date") and outside.code == "outside_intended_use"
    assert "study.patient_mismatch_warned" in actions()

    sent = []
    monkeypatch.setattr(pacs_results, "_c_store", lambda study, items: sent.extend(items) or {})
    pacs_results.pacs_send_results(study_id=study.pk, final=True)
    [sr] = [dataset for delivery, dataset in sent if delivery.kind == "sr"]
    buffer = io.BytesIO()
    sr.save_as(buffer)
    [group] = hd.sr.srread(io.BytesIO(buffer.getvalue())).content.get_image_measurement_groups()
    evaluations = {(e.name.meaning, e.value.value) for e in group.get_qualitative_evaluations()}
    assert {("AI result warning", "wrong-patient"), ("AI result warning", "outside-ages")} <= evaluations
    assert {("Pneumonia", codes.SCT.Present.value), ("Pneumonia", codes.SCT.Absent.value)} & evaluations
    if shutil.which("dciodvfy"):  # dicom3tools: the SR stays a valid Comprehensive 3D SR
        path = tmp_path / "sr.dcm"
        path.write_bytes(buffer.getvalue())
        checked = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
        assert "Error" not in checked.stdout + checked.stderr, checked.stdout + checked.stderr
    prediction = Prediction.objects.get(image__study=study)
    assert caption_lines(prediction, study_warnings(study=study))[1:3] == [
        "WARNING: Film may be of another patient",
        "WARNING: Outside intended use",
    ]
