"""A study read as a FHIR R4 DiagnosticReport (diagnostics/integrations/fhir/)."""

from __future__ import annotations

import pytest
from django.urls import reverse
from pydicom.uid import generate_uid

from diagnostics.models import Prediction
from diagnostics.selectors import study_get_for_user
from diagnostics.services.inference import study_run_inference

from ...conftest import api_client_for
from ...images import cr_film_bytes
from ..dicom import receive

pytestmark = pytest.mark.django_db


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
