"""Films from a PACS over DICOM become studies (diagnostics/integrations/dicom_in/). The real PACS round trip
is in tests/integrations/test_pacs_orthanc.py."""

from __future__ import annotations

import datetime
import io

import pytest
from django.core.exceptions import ValidationError
from pydicom.uid import generate_uid

from diagnostics.integrations.dicom_in.services import (
    pacs_association_folder,
    pacs_check_instance,
    pacs_inbox_write,
    pacs_ingest_leftovers,
    pacs_peer_for,
)
from diagnostics.models import DicomPeer, Image, Patient, Prediction, Study
from diagnostics.services.inference import study_run_inference

from ...images import cr_film_bytes, jpeg_bytes
from ..dicom import actions, receive

pytestmark = pytest.mark.django_db


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


def test_a_film_that_disagrees_with_the_known_patient_is_filed_with_a_warning_in_its_results(
    peer, patient, active_model, settings, monkeypatch, tmp_path
):
    """Issue 29 item 4: a PACS's film is filed under the patient its PatientID names; when its name and birth
    date are another person's, the study carries the wrong-patient warning (never refused: the film was
    acknowledged), and so do the Structured Report and the captions sent back."""
    import os
    import shutil
    import subprocess

    import highdicom as hd
    from pydicom.sr.codedict import codes

    from diagnostics.integrations.pacs_out import services as pacs_results
    from diagnostics.integrations.pacs_out.services import caption_lines
    from diagnostics.selectors.warnings import study_warnings

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
    # dicom3tools (make test-deps installs it; CI must have it): the SR stays a valid Comprehensive 3D SR.
    if shutil.which("dciodvfy") or os.environ.get("CI") == "true":
        path = tmp_path / "sr.dcm"
        path.write_bytes(buffer.getvalue())
        checked = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
        assert "Error" not in checked.stdout + checked.stderr, checked.stdout + checked.stderr
    prediction = Prediction.objects.get(image__study=study)
    assert caption_lines(prediction, study_warnings(study=study))[1:3] == [
        "WARNING: Film may be of another patient",
        "WARNING: Outside intended use",
    ]
