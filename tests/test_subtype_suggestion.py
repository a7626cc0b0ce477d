"""The AI's bacterial-or-viral suggestion (issue 36): stored only for a film the model calls pneumonia, and shown
as a suggestion with its uncertainty on the study page, the PDF, the API and FHIR (the SR: tests/integrations/
pacs_out/test_pacs_validation.py), never for a normal or refused film; the Models page compares the clinicians'
own subtype with it."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from django.urls import reverse

from diagnostics.models import Prediction, Study, User
from diagnostics.selectors.monitoring import model_monitoring
from diagnostics.services.feedback import feedback_record
from diagnostics.services.inference import study_run_inference

from .conftest import api_client_for, login_client
from .factories import AdminFactory, ModelVersionFactory, PredictionFactory, StudyFactory
from .test_study_report import page_text, report_pages

pytestmark = pytest.mark.django_db

HEAD = {
    "onnx_output": "subtype",
    "labels": ["bacterial", "viral"],
    "threshold": 0.4,
    "metrics": {"external": {"roc_auc": 0.91}},
    "expected": {
        "accuracy": 0.84,
        "accuracy_ci95": [0.78, 0.89],
        "sensitivity": 0.8,
        "specificity": 0.86,
        "ece_ci95": [0.02, 0.045],  # within 0.05: shown as a probability
    },  # fmt: skip
    "expected_method": "cross-fitted on external/",
}


@pytest.fixture
def subtype_model():  # noqa: ANN201
    return ModelVersionFactory(threshold=0.5, manifest={"subtype": HEAD})


def _prediction(owner, patient, model, *, probability: float, subtype: float | None) -> Prediction:  # noqa: ANN001
    study = StudyFactory(created_by=owner, patient=patient)
    return PredictionFactory(
        study=study, model_version=model, probability=probability, subtype_probability=subtype, finish_study=True
    )


def test_a_normal_film_cannot_carry_a_subtype(owner, patient, subtype_model):
    prediction = _prediction(owner, patient, subtype_model, probability=0.9, subtype=0.7)
    with pytest.raises(IntegrityError), transaction.atomic():
        Prediction.objects.filter(pk=prediction.pk).update(label=Prediction.Label.NORMAL)


def test_the_suggestion_follows_the_models_threshold_and_says_what_to_expect(owner, patient, subtype_model):
    viral = _prediction(owner, patient, subtype_model, probability=0.9, subtype=0.4).subtype
    bacterial = _prediction(owner, patient, subtype_model, probability=0.9, subtype=0.39).subtype
    assert viral is not None and viral["label"] == "viral" and viral["probability"] == 0.4
    assert bacterial is not None and bacterial["label"] == "bacterial"
    assert viral["expected_accuracy"] == 0.84 and viral["expected_accuracy_ci95"] == [0.78, 0.89]
    assert _prediction(owner, patient, subtype_model, probability=0.1, subtype=None).subtype is None
    no_head = ModelVersionFactory(threshold=0.5)
    assert _prediction(owner, patient, no_head, probability=0.9, subtype=None).subtype is None


def test_the_api_gives_each_prediction_its_subtype_or_null(owner, patient, subtype_model):
    pneumonia = _prediction(owner, patient, subtype_model, probability=0.9, subtype=0.81)
    normal = _prediction(owner, patient, subtype_model, probability=0.1, subtype=None)
    client = api_client_for(owner)
    body = client.get(reverse("api_study_detail", args=[pneumonia.image.study_id])).json()
    [film] = body["images"]
    assert film["predictions"][0]["subtype"] == {
        "label": "viral", "probability": 0.81, "probability_calibrated": True, "expected_accuracy": 0.84,
        "expected_accuracy_ci95": [0.78, 0.89],
    }  # fmt: skip
    body = client.get(reverse("api_study_detail", args=[normal.image.study_id])).json()
    assert body["images"][0]["predictions"][0]["subtype"] is None


def test_the_study_page_and_the_pdf_word_it_as_a_suggestion_with_its_uncertainty(owner, patient, subtype_model):
    pneumonia = _prediction(owner, patient, subtype_model, probability=0.9, subtype=0.12)
    client = login_client(owner)
    text = page_text(client.get(reverse("study_detail", args=[pneumonia.image.study_id])).content.decode())
    assert "AI suggestion, not a diagnosis: Bacterial pneumonia more likely than viral." in text
    assert "Probability that it is viral 12.0 %" in text
    assert "expected to be right for 84.0 % of new patients (95 % CI 78.0 % to 89.0 %)" in text
    pdf = " ".join(report_pages(client, pneumonia.image.study))
    assert "AI suggestion (not a diagnosis)" in pdf
    assert "Bacterial pneumonia more likely than viral: probability that it is viral 12.0 %" in pdf

    normal = _prediction(owner, patient, subtype_model, probability=0.1, subtype=None)
    text = page_text(client.get(reverse("study_detail", args=[normal.image.study_id])).content.decode())
    assert "AI suggestion, not a diagnosis" not in text and "more likely than" not in text
    assert "bacterial or viral" not in " ".join(report_pages(client, normal.image.study))


def test_a_suggestion_whose_calibration_is_not_shown_within_005_is_an_ai_score(owner, patient):
    loose = {**HEAD, "expected": {**HEAD["expected"], "ece_ci95": [0.037, 0.102]}}  # the bundled model's interval
    model = ModelVersionFactory(threshold=0.5, manifest={"subtype": loose})
    prediction = _prediction(owner, patient, model, probability=0.9, subtype=0.75)
    text = page_text(
        login_client(owner).get(reverse("study_detail", args=[prediction.image.study_id])).content.decode()
    )
    assert "AI score for viral 75.0 % (not a calibrated probability)" in text and "Probability that" not in text
    body = api_client_for(owner).get(reverse("api_study_fhir", args=[prediction.image.study_id])).json()
    [suggestion] = [r for r in body["contained"] if r["id"] == "film-1-subtype"]
    assert suggestion["component"][0]["code"]["text"].startswith("AI score for viral pneumonia")
    api = api_client_for(owner).get(reverse("api_study_detail", args=[prediction.image.study_id])).json()
    assert api["images"][0]["predictions"][0]["subtype"]["probability_calibrated"] is False


def test_fhir_has_a_second_observation_derived_from_the_films(owner, patient, subtype_model):
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport

    pneumonia = _prediction(owner, patient, subtype_model, probability=0.9, subtype=0.75)
    body = api_client_for(owner).get(reverse("api_study_fhir", args=[pneumonia.image.study_id])).json()
    DiagnosticReport.model_validate(body)
    observations = [r for r in body["contained"] if r["resourceType"] == "Observation"]
    assert [o["id"] for o in observations] == ["film-1", "film-1-subtype"]
    suggestion = observations[1]
    assert suggestion["valueCodeableConcept"]["coding"][0]["code"] == "75570004"  # viral pneumonia
    assert suggestion["derivedFrom"] == [{"reference": "#film-1"}]
    assert suggestion["component"][0]["valueQuantity"]["value"] == 0.75
    assert "AI suggestion, not a diagnosis" in suggestion["note"][0]["text"]
    assert {"reference": "#film-1-subtype"} in body["result"]
    assert "Pneumonia suspected on 1 of 1 analysed films" in body["conclusion"]

    normal = _prediction(owner, patient, subtype_model, probability=0.1, subtype=None)
    body = api_client_for(owner).get(reverse("api_study_fhir", args=[normal.image.study_id])).json()
    assert [r["id"] for r in body["contained"] if r["resourceType"] == "Observation"] == ["film-1"]


def test_the_models_page_gives_the_clinicians_agreement_with_the_suggestion(owner, member, patient, subtype_model):
    admin: User = AdminFactory(username="root-admin", team=owner.team)
    viral = _prediction(owner, patient, subtype_model, probability=0.9, subtype=0.8)
    bacterial = _prediction(owner, patient, subtype_model, probability=0.9, subtype=0.1)
    feedback_record(user=owner, prediction=viral, agrees=True, subtype="viral")  # agrees
    feedback_record(user=member, prediction=viral, agrees=True, subtype="bacterial")  # disagrees
    feedback_record(user=owner, prediction=bacterial, agrees=True, subtype="viral")  # first reading: replaced
    feedback_record(user=owner, prediction=bacterial, agrees=True, subtype="bacterial")  # agrees
    feedback_record(user=member, prediction=bacterial, agrees=True)  # names no subtype: not counted
    summary = model_monitoring(model_version=subtype_model)
    assert (summary.subtype_readings, summary.subtype_agreements) == (3, 2)
    html = login_client(admin).get(reverse("model_detail", args=[subtype_model.pk])).content.decode()
    assert "66.7 % (2 of 3 readings that name a subtype agree with the AI's suggestion)" in html


def test_the_worker_stores_it_for_pneumonias_only(owner, patient, active_model):
    from pathlib import Path

    if not active_model.subtype:
        pytest.fail("the bundled model has no subtype head")
    films = sorted((Path(__file__).parent / "fixtures" / "films").glob("*.jpeg"))
    study = StudyFactory(created_by=owner, patient=patient, films=[(p.name, p.read_bytes()) for p in films])
    study_run_inference(study_id=study.pk)
    study.refresh_from_db()
    assert study.status == Study.Status.DONE, study.failure_reason
    predictions = list(Prediction.objects.filter(image__study=study))
    assert {p.label for p in predictions} == {"NORMAL", "PNEUMONIA"}  # the fixtures hold both
    for prediction in predictions:
        assert (prediction.subtype_probability is not None) == (prediction.label == "PNEUMONIA")
        if prediction.subtype is not None:
            assert 0.0 < prediction.subtype_probability < 1.0
            assert prediction.subtype["label"] in {"viral", "bacterial"}
