"""Results back to the PACS as a DICOM SR and captioned Secondary Captures (diagnostics/integrations/pacs_out/)."""

from __future__ import annotations

import io

import pytest
from django.urls import reverse
from pydicom.uid import generate_uid

from diagnostics.integrations.pacs_out.services import CAPTION, build_secondary_capture, build_structured_report
from diagnostics.models import DicomPeer, Prediction, Study
from diagnostics.services.inference import study_run_inference

from ...conftest import api_client_for
from ...factories import UserFactory
from ...images import cr_film_bytes
from ..dicom import actions, receive

pytestmark = pytest.mark.django_db


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


def test_results_go_at_once_with_the_heatmap_then_retry_an_unreachable_pacs_and_record_the_failure(peer, active_model):
    from diagnostics.integrations.pacs_out.services import PacsNotDelivered, caption_lines, pacs_send_results
    from diagnostics.models import PacsDelivery

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
    from diagnostics.integrations.pacs_out.services import _deliveries, _films
    from diagnostics.models import PacsDelivery

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
