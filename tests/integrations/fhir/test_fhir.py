"""A study read as FHIR R4 (diagnostics/integrations/fhir/): the DiagnosticReport with its Patient, the film's
time, the PDF, the captures and the order; the search a hospital runs; the CapabilityStatement. Every
resource is validated with fhir.resources (R4B)."""

from __future__ import annotations

import base64
import io

import pydicom
import pytest
from django.urls import reverse
from pydicom.uid import generate_uid

from diagnostics.models import AuditEvent, PacsDelivery, Prediction, Study
from diagnostics.selectors import study_get_for_user
from diagnostics.services.inference import study_run_inference

from ...conftest import api_client_for
from ...images import cr_film_bytes
from ..dicom import receive

pytestmark = pytest.mark.django_db

MRN_SYSTEM, ACCESSION_SYSTEM = "urn:oid:1.2.36.146.595.217.0.1", "urn:oid:1.2.36.146.595.217.0.2"


def edited(data: bytes, **tags: str) -> bytes:
    """A film with some header attributes changed, or removed (value None)."""
    dataset = pydicom.dcmread(io.BytesIO(data))
    for keyword, value in tags.items():
        if value is None:
            delattr(dataset, keyword)
        else:
            setattr(dataset, keyword, value)
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


def assessed(peer, *films: bytes) -> Study:  # noqa: ANN001
    [study] = receive(peer, *films)
    study_run_inference(study_id=study.pk)
    study.refresh_from_db()
    assert study.status == Study.Status.DONE, study.failure_reason
    return study


@pytest.fixture
def configured(settings):  # noqa: ANN001, ANN201
    settings.FHIR_MRN_SYSTEM, settings.FHIR_ACCESSION_SYSTEM = MRN_SYSTEM, ACCESSION_SYSTEM
    settings.TIME_ZONE = "Europe/Madrid"
    return settings


def test_a_study_reads_as_a_valid_fhir_r4_diagnostic_report(peer, active_model, owner, outsider):
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport

    uid = generate_uid()
    study = assessed(peer, cr_film_bytes(patient_id="MRN-4", study_uid=uid))
    url = reverse("api_study_fhir", args=[study.pk])

    response = api_client_for(owner).get(url, HTTP_ACCEPT="application/fhir+json")
    assert response.status_code == 200 and response["Content-Type"].startswith("application/fhir+json")
    body = response.json()
    report = DiagnosticReport.model_validate(body)
    assert report.status == "preliminary" and report.code.coding[0].code == "18748-4"
    imaging_study, observation, media = body["contained"]
    assert imaging_study["identifier"][0]["value"] == f"urn:oid:{uid}"
    prediction = Prediction.objects.get()
    assert observation["code"]["coding"][0]["code"] == "233604007"
    assert observation["valueQuantity"]["value"] == pytest.approx(prediction.probability, abs=1e-4)
    assert observation["interpretation"][0]["coding"][0]["code"] == (
        "POS" if prediction.label == "PNEUMONIA" else "NEG"
    )
    assert media["resourceType"] == "Media" and media["content"]["contentType"] == "image/png"
    assert "not a diagnosis" in body["conclusion"]
    assert api_client_for(outsider).get(url).status_code == 404
    assert study_get_for_user(user=owner, study_id=study.pk) == study
    # The same report at the FHIR endpoint.
    again = api_client_for(owner).get(reverse("fhir_report", args=[f"study-{study.pk}"])).json()
    assert again["id"] == body["id"] and again["contained"] == body["contained"]


def test_the_report_names_the_patient_the_films_time_the_order_the_pdf_and_the_captures(
    peer, active_model, owner, configured
):
    from fhir.resources.R4B.binary import Binary
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport
    from fhir.resources.R4B.patient import Patient as FhirPatient

    film = edited(cr_film_bytes(patient_id="MRN-F1", study_uid=generate_uid(), study_date="20240102"),
                  StudyTime="101500", Modality="DX")  # fmt: skip
    study = assessed(peer, film)
    PacsDelivery.objects.create(study=study, peer=peer, kind="sr", sop_instance_uid="1.2.3.4.9", status="delivered")
    PacsDelivery.objects.create(study=study, peer=peer, kind="sc", sop_instance_uid="1.2.3.4.10", status="delivered")
    client = api_client_for(owner)
    body = client.get(reverse("fhir_report", args=[f"study-{study.pk}"])).json()
    DiagnosticReport.model_validate(body)

    # The film's own time (DICOM StudyDate and StudyTime, in the portal's time zone), not the upload's.
    assert body["effectiveDateTime"] == "2024-01-02T10:15:00+01:00"
    assert "upload time" not in body["conclusion"]
    # The patient: a reference the endpoint resolves, with the MRN in the configured system.
    patient = study.patient
    assert body["subject"]["reference"] == f"Patient/patient-{patient.pk}"
    assert body["subject"]["identifier"]["system"] == MRN_SYSTEM
    assert body["subject"]["identifier"]["value"] == "MRN-F1"
    read = client.get(reverse("fhir_patient", args=[f"patient-{patient.pk}"])).json()
    FhirPatient.model_validate(read)
    assert read["identifier"][0] == body["subject"]["identifier"] and read["birthDate"] == "2022-03-01"
    # The order: the accession number as the ServiceRequest's identifier, and on the ImagingStudy.
    [order] = body["basedOn"]
    assert order["type"] == "ServiceRequest" and order["identifier"]["value"] == "ACC-PACS-1"
    assert (
        order["identifier"]["system"] == ACCESSION_SYSTEM and order["identifier"]["type"]["coding"][0]["code"] == "ACSN"
    )
    imaging_study = next(r for r in body["contained"] if r["resourceType"] == "ImagingStudy")
    assert imaging_study["modality"] == [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "DX"}]
    assert order["identifier"] in imaging_study["identifier"]
    # The Structured Report sent to the PACS identifies the report; the capture sent is the Media's identifier.
    assert {"system": "urn:dicom:uid", "value": "urn:oid:1.2.3.4.9"} in body["identifier"]
    media = next(r for r in body["contained"] if r["resourceType"] == "Media")
    assert media["identifier"] == [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3.4.10"}]
    assert body["media"] == [{"comment": "Film 1: the film with the AI's heatmap and caption",
                              "link": {"reference": f"#{media['id']}"}}]  # fmt: skip

    # The PDF and the capture, fetched as a hospital would, with the same token.
    [form] = body["presentedForm"]
    assert form["contentType"] == "application/pdf"
    pdf = client.get(form["url"])
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf" and pdf.content.startswith(b"%PDF")
    png = client.get(media["content"]["url"])
    assert png.status_code == 200 and png["Content-Type"] == "image/png" and png.content.startswith(b"\x89PNG")
    as_resource = client.get(media["content"]["url"], HTTP_ACCEPT="application/fhir+json").json()
    Binary.model_validate(as_resource)
    assert base64.b64decode(as_resource["data"]) == png.content
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"study.viewed", "patient.viewed", "study.report_exported", "image.viewed"} <= actions


def test_without_configured_systems_identifiers_carry_no_invented_system(peer, active_model, owner, settings):
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport

    settings.FHIR_MRN_SYSTEM = settings.FHIR_ACCESSION_SYSTEM = settings.FHIR_REPORT_ID_SYSTEM = ""
    study = assessed(peer, edited(cr_film_bytes(patient_id="MRN-F2", study_uid=generate_uid()), StudyDate=None))
    response = api_client_for(owner).get(reverse("fhir_report", args=[f"study-{study.pk}"]))
    body = response.json()
    DiagnosticReport.model_validate(body)
    assert "system" not in body["subject"]["identifier"] and "system" not in body["basedOn"][0]["identifier"]
    assert "identifier" not in body  # nothing sent to a PACS, no report system configured
    text = response.content.decode()
    assert "urn:pneumonia-portal" not in text
    assert all("testserver" not in str(i) for i in [body["subject"], body["basedOn"]])  # not the host's URL
    # No StudyDate on the film: the upload time, and the report says so.
    assert body["effectiveDateTime"] == study.created_at.isoformat()
    assert "The films record no DICOM study date: the effective time is the upload time." in body["conclusion"]


def test_a_hospital_searches_reports_by_patient_identifier_and_date(peer, active_model, owner, outsider, configured):
    from fhir.resources.R4B.bundle import Bundle

    old = assessed(peer, cr_film_bytes(patient_id="MRN-S1", study_uid=generate_uid(), study_date="20231215"))
    new = assessed(peer, cr_film_bytes(patient_id="MRN-S1", study_uid=generate_uid(), study_date="20240310"))
    other = assessed(peer, cr_film_bytes(patient_id="MRN-S2", study_uid=generate_uid(), study_date="20240311"))
    client = api_client_for(owner)
    url = reverse("fhir_report_search")

    def ids(**query: str | list[str]) -> list[str]:
        response = client.get(url, query)
        assert response.status_code == 200, response.content
        bundle = response.json()
        Bundle.model_validate(bundle)
        assert bundle["type"] == "searchset" and bundle["total"] == len(bundle["entry"])
        return [entry["resource"]["id"] for entry in bundle["entry"]]

    assert ids(**{"patient.identifier": f"{MRN_SYSTEM}|MRN-S1"}) == [f"study-{new.pk}", f"study-{old.pk}"]
    assert ids(**{"patient.identifier": "MRN-S1", "date": "ge2024-01-01"}) == [f"study-{new.pk}"]
    assert ids(**{"patient.identifier": "MRN-S1", "date": ["ge2023-12-01", "lt2024"]}) == [f"study-{old.pk}"]
    assert ids(**{"patient.identifier": "MRN-S1", "date": "2024-03"}) == [f"study-{new.pk}"]
    assert ids(**{"patient.identifier": "urn:oid:9.9.9|MRN-S1"}) == []  # another system's MRN
    assert ids(patient=f"Patient/patient-{other.patient_id}") == [f"study-{other.pk}"]
    assert ids(identifier=f"{ACCESSION_SYSTEM}|ACC-PACS-1", date="ge2024-03-11") == [f"study-{other.pk}"]
    assert ids(**{"patient.identifier": "MRN-S1", "_count": "1"}) == [f"study-{new.pk}"]
    events = AuditEvent.objects.filter(action="study.listed", detail__via="fhir")
    assert events.exists() and events.first().detail["study_ids"]

    # Another team's clinician finds nothing and reads nothing.
    bundle = api_client_for(outsider).get(url, {"patient.identifier": "MRN-S1"}).json()
    assert bundle["total"] == 0 and bundle["entry"] == []
    assert api_client_for(outsider).get(reverse("fhir_report", args=[f"study-{old.pk}"])).status_code == 404

    # What the endpoint cannot answer says why, as an OperationOutcome.
    from fhir.resources.R4B.operationoutcome import OperationOutcome

    for query, words in [({}, "needs patient.identifier"), ({"patient.identifier": "X", "colour": "red"},
                         "Unsupported search parameter(s): colour"), ({"patient.identifier": "X", "date": "ge2024-13"},
                         "not a FHIR date")]:  # fmt: skip
        response = client.get(url, query)
        assert response.status_code == 400
        outcome = response.json()
        OperationOutcome.model_validate(outcome)
        assert outcome["issue"][0]["code"] == "invalid" and words in outcome["issue"][0]["diagnostics"]
    anonymous = client.__class__().get(url, {"patient.identifier": "MRN-S1"})
    assert anonymous.status_code == 401 and anonymous.json()["issue"][0]["code"] == "login"
    missing = client.get(reverse("fhir_report", args=["study-999999"]))
    assert missing.status_code == 404 and missing.json()["resourceType"] == "OperationOutcome"


def test_metadata_is_a_capability_statement_of_what_is_supported(client):  # noqa: ANN001
    from fhir.resources.R4B.capabilitystatement import CapabilityStatement

    response = client.get(reverse("fhir_metadata"))  # open, like every FHIR server's
    assert response.status_code == 200 and response["Content-Type"].startswith("application/fhir+json")
    statement = response.json()
    CapabilityStatement.model_validate(statement)
    [rest] = statement["rest"]
    resources = {r["type"]: r for r in rest["resource"]}
    assert set(resources) == {"DiagnosticReport", "Patient", "Binary"}
    assert {i["code"] for i in resources["DiagnosticReport"]["interaction"]} == {"read", "search-type"}
    assert {p["name"] for p in resources["DiagnosticReport"]["searchParam"]} >= {"patient.identifier", "date"}
