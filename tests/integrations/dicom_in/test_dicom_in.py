"""Films from a PACS over DICOM become studies as they arrive (diagnostics/integrations/dicom_in/services.py:
dicom_ingest). The association rules and the real network are in test_receiver.py; the PACS round trip in
tests/integrations/test_pacs_orthanc.py."""

from __future__ import annotations

import datetime
import io

import pydicom
import pytest
from django.core.exceptions import ValidationError
from pydicom.uid import generate_uid

from diagnostics.integrations.dicom_in.services import (
    CANNOT_UNDERSTAND,
    SENT_ELSEWHERE,
    SOP_CLASS_NOT_SUPPORTED,
    STUDY_FULL,
    DicomRefused,
    _fit,
    dicom_ingest,
    pacs_ingest_leftovers,
    pacs_peer_for,
)
from diagnostics.models import AuditEvent, DicomPeer, Image, Patient, Prediction, Study, validate_ip_networks
from diagnostics.services.inference import study_run_inference
from diagnostics.services.studies import MAX_IMAGES_PER_STUDY

from ...conftest import login_client
from ...images import cr_film_bytes, jpeg_bytes
from ..dicom import actions, receive

pytestmark = pytest.mark.django_db


def with_tags(data: bytes, **tags: str) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    for name, value in tags.items():
        setattr(ds, name, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_films_are_filed_as_they_arrive_into_one_study_of_a_patient_registered_from_the_header(peer, inbox):
    uid = generate_uid()
    first = cr_film_bytes(patient_id="MRN-9", study_uid=uid, seed=0)
    [study] = receive(peer, first)
    # Filed at once, not when the association ends: the study exists and waits for the AI after one film.
    assert (study.study_instance_uid, study.dicom_peer, study.images.count()) == (uid, peer, 1)
    assert study.status == Study.Status.QUEUED and study.created_by == peer.service_user
    [same] = receive(peer, cr_film_bytes(patient_id="MRN-9", study_uid=uid, seed=1))
    assert same.pk == study.pk and same.images.count() == 2
    assert study.accession_number == "ACC-PACS-1" and study.modality == "CR" and study.view_position == "PA"
    patient = study.patient
    assert (patient.team, patient.medical_record_number, patient.name) == (peer.team, "MRN-9", "Doe Sam")
    assert patient.birth_date == datetime.date(2022, 3, 1) and patient.sex == "F"
    assert {"patient.created_from_dicom", "study.created", "dicom.study_received", "study.images_added"} <= set(
        actions()
    )
    assert not inbox.exists() or not list(inbox.rglob("*.dcm")), "nothing is kept in an inbox"

    # The PACS sends one again: acknowledged, filed once.
    again = dicom_ingest(data=first, user=peer.service_user, peer=peer)
    assert again.duplicate and again.image is None and again.study == study
    assert Image.objects.count() == 2 and "dicom.instances_resent" in actions()

    # A later film of a finished study joins it and the study is assessed again (its result follows each film).
    Study.objects.filter(pk=study.pk).update(status=Study.Status.DONE)
    [same] = receive(peer, cr_film_bytes(patient_id="MRN-9", study_uid=uid, seed=2))
    assert same.pk == study.pk and same.images.count() == 3 and same.status == Study.Status.QUEUED
    assert Patient.objects.count() == 1


def test_the_modality_is_recorded_as_sent(peer):
    [study] = receive(peer, with_tags(cr_film_bytes(patient_id="MRN-DX", study_uid=generate_uid()), Modality="DX",
                                      SOPClassUID="1.2.840.10008.5.1.4.1.1.1.1"))  # fmt: skip
    assert study.modality == "DX"


@pytest.mark.parametrize("modality", ["CT", "MR", "US", "SR", ""])
def test_what_the_ai_was_not_made_for_is_refused_at_c_store_and_nothing_is_filed(peer, modality):
    film = with_tags(cr_film_bytes(patient_id="MRN-CT", study_uid=generate_uid()), Modality=modality)
    with pytest.raises(DicomRefused) as refused:
        dicom_ingest(data=film, user=peer.service_user, peer=peer)
    assert refused.value.status == SOP_CLASS_NOT_SUPPORTED
    assert len(refused.value.comment) <= 64 and refused.value.comment.endswith("only.")
    assert (modality or "No modality") in refused.value.comment
    assert not Study.objects.exists() and not Patient.objects.exists()
    event = AuditEvent.objects.get(action="dicom.instance_refused")
    assert event.detail["status"] == "0x0122" and event.team_id == peer.team_id


def test_a_missing_birth_date_is_accepted_and_shown_as_age_unknown(peer, member):
    [study] = receive(peer, cr_film_bytes(patient_id="NEW-1", study_uid=generate_uid(), birth_date=""))
    assert study.patient.birth_date is None
    assert AuditEvent.objects.get(action="patient.created_from_dicom").detail["birth_date_known"] is False
    from diagnostics.selectors.warnings import study_warnings

    assert [warning.code for warning in study_warnings(study=study)] == ["age_unknown"]
    client = login_client(member)
    for url in (f"/studies/{study.pk}/", f"/patients/{study.patient.pk}/", "/", "/patients/"):
        page = client.get(url)
        assert page.status_code == 200, url
        assert "age unknown" in page.content.decode(), url


def test_a_clinician_registering_a_patient_still_gives_a_birth_date(member):
    from diagnostics.forms import PatientForm

    form = PatientForm({"medical_record_number": "MRN-F", "name": "Ada", "sex": "F"})
    assert not form.is_valid() and "birth_date" in form.errors


@pytest.mark.parametrize(
    ("film", "comment"),
    [
        (lambda: cr_film_bytes(patient_id="", study_uid=generate_uid()), "No PatientID: cannot be filed."),
        (lambda: jpeg_bytes(), "Not a readable DICOM file."),
    ],
)
def test_a_film_the_portal_cannot_file_is_refused_with_a_whole_sentence_that_fits_64_characters(peer, film, comment):
    with pytest.raises(DicomRefused) as refused:
        dicom_ingest(data=film(), user=peer.service_user, peer=peer)
    assert (refused.value.status, refused.value.comment) == (CANNOT_UNDERSTAND, comment)
    assert isinstance(refused.value, ValidationError)
    assert not Study.objects.exists()


def test_a_film_a_study_cannot_take_is_refused_at_c_store_not_acknowledged_and_dropped(peer, settings):
    """Issue 32 item 2: the 21st film of a study was answered Success and then moved aside."""
    uid = generate_uid()
    for seed in range(MAX_IMAGES_PER_STUDY):
        receive(peer, cr_film_bytes(patient_id="MRN-30", study_uid=uid, seed=seed, size=64))
    with pytest.raises(DicomRefused) as refused:
        dicom_ingest(data=cr_film_bytes(patient_id="MRN-30", study_uid=uid, seed=99, size=64),
                     user=peer.service_user, peer=peer)  # fmt: skip
    assert refused.value.status == STUDY_FULL
    assert refused.value.comment == f"The study has {MAX_IMAGES_PER_STUDY} films, the most it takes."
    assert Study.objects.get().images.count() == MAX_IMAGES_PER_STUDY


def test_error_comments_are_never_cut_mid_sentence():
    assert _fit("Patient 12 is fine. And more text follows here.", "fallback.") == "Patient 12 is fine."
    long = "The DICOM file's pixel data could not be decoded because its JPEG 2000 codestream says 16000 x 16000"
    assert _fit(long, "The image cannot be read or is too large.") == "The image cannot be read or is too large."
    with pytest.raises(ValueError, match="over 64"):
        DicomRefused(status=CANNOT_UNDERSTAND, comment="x" * 65)


def test_an_instance_another_team_filed_is_refused_not_claimed(peer, other_team):
    from ...factories import UserFactory

    film = cr_film_bytes(patient_id="MRN-1", study_uid=generate_uid())
    receive(peer, film)
    stranger = DicomPeer.objects.create(ae_title="OTHERPACS", team=other_team, allowed_networks="127.0.0.1",
                                        service_user=UserFactory(username="other-pacs", team=other_team))  # fmt: skip
    with pytest.raises(DicomRefused) as refused:
        dicom_ingest(data=film, user=stranger.service_user, peer=stranger)
    assert refused.value.status == SENT_ELSEWHERE and Study.objects.count() == 1


def test_a_known_patient_is_matched_by_medical_record_number_in_the_peers_team(peer, patient):
    [study] = receive(peer, cr_film_bytes(patient_id=patient.medical_record_number, study_uid=generate_uid()))
    assert study.patient == patient and Patient.objects.count() == 1


def test_only_registered_enabled_peers_are_heard_and_only_from_their_networks(peer):
    assert pacs_peer_for(ae_title="WARDPACS ") == peer
    assert pacs_peer_for(ae_title="STRANGER") is None
    peer.allowed_networks = "10.1.0.0/16\n192.0.2.7, fd00::/8"
    assert [peer.allows_address(a) for a in ("10.1.200.3", "192.0.2.7", "::ffff:10.1.0.9", "fd00::5")] == [True] * 4
    assert [peer.allows_address(a) for a in ("10.2.0.1", "127.0.0.1", "192.0.2.8", "fe80::1", "x")] == [False] * 5
    peer.allowed_networks = ""
    assert not peer.allows_address("127.0.0.1"), "no networks: nobody"
    with pytest.raises(ValidationError, match="'pacs.example.org' is not an IP address"):
        validate_ip_networks("10.0.0.1, pacs.example.org")
    DicomPeer.objects.filter(pk=peer.pk).update(enabled=False)
    assert pacs_peer_for(ae_title="WARDPACS") is None


def test_films_an_older_receiver_acknowledged_and_left_in_its_inbox_are_filed_at_start(peer, inbox):
    folder = inbox / f"{peer.pk}-0123abcd"
    folder.mkdir(parents=True)
    (folder / "a.dcm").write_bytes(cr_film_bytes(patient_id="MRN-7", study_uid=generate_uid()))
    (folder / "b.dcm").write_bytes(with_tags(cr_film_bytes(patient_id="MRN-7", study_uid=generate_uid()),
                                             Modality="CT"))  # fmt: skip
    (folder / "half-written.part").write_bytes(b"DICM")  # never acknowledged

    assert pacs_ingest_leftovers() == 1
    assert Study.objects.get().images.count() == 1
    assert not folder.exists()
    kept = inbox / "refused" / "b.dcm"
    assert kept.exists() and "CR and DX films only" in kept.with_suffix(".txt").read_text()


def test_a_film_that_disagrees_with_the_known_patient_is_filed_with_a_warning_in_its_results(
    peer, patient, active_model, settings, monkeypatch, tmp_path
):
    """Issue 29 item 4: a PACS's film is filed under the patient its PatientID names; when its name and birth
    date are another person's, the study carries the wrong-patient warning (never refused), and so do the
    Structured Report and the captions sent back."""
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
