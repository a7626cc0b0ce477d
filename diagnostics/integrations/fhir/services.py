"""A study's AI result as FHIR R4: a DiagnosticReport with one Observation per film (contained) and
a reference to the ImagingStudy (by its DICOM StudyInstanceUID when the study has one).

Codes: DiagnosticReport category RAD (HL7 v2-0074), code LOINC 18748-4 "Diagnostic imaging study";
each Observation SNOMED CT 233604007 "Pneumonia" with the score as a unitless Quantity (UCUM "1"),
interpretation POS / NEG (v3 ObservationInterpretation), the decision threshold as a component, and
for a film the AI did not analyse, no value but a dataAbsentReason and IND. The report is
`preliminary`: an AI result is not a clinician's verified report.
"""

from __future__ import annotations

from typing import Any

from diagnostics.integrations.pacs_out.services import CAPTION  # the same words on every channel
from diagnostics.models import Prediction, Study
from diagnostics.selectors import FilmResult, study_film_results, study_summary
from diagnostics.selectors.warnings import study_warnings

SNOMED, LOINC, UCUM = "http://snomed.info/sct", "http://loinc.org", "http://unitsofmeasure.org"
V3_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
DICOM_UID_SYSTEM = "urn:dicom:uid"
PORTAL_SYSTEM = "urn:pneumonia-portal"
PNEUMONIA = {"system": SNOMED, "code": "233604007", "display": "Pneumonia"}


def study_fhir_report(*, study: Study, base_url: str) -> dict[str, Any]:
    """`study` from study_get_for_user (access-checked, predictions prefetched)."""
    patient = study.patient
    subject = {
        "identifier": {"system": f"{PORTAL_SYSTEM}:team:{patient.team_id}:mrn", "value": patient.medical_record_number},
        "display": patient.name,
    }
    films = study_film_results(study=study)
    observations = [_observation(f.number, f.prediction, subject) for f in films if f.prediction is not None]
    imaging_study: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "id": "imaging-study",
        "status": "available",
        "subject": subject,
        "numberOfInstances": len(films),
        "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": study.modality}],
    }
    if study.study_instance_uid:
        imaging_study["identifier"] = [{"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{study.study_instance_uid}"}]
    suspected = [o for o in observations if _interpretation(o) == "POS"]
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": f"study-{study.pk}",
        "contained": [imaging_study, *observations],
        "identifier": [{"system": f"{base_url}/api/v1/studies/", "value": str(study.pk)}],
        "status": _report_status(study),
        "category": [
            {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology"}
                ]
            }
        ],
        "code": {
            "coding": [{"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}],
            "text": "AI assessment of a chest radiograph for pneumonia",
        },
        "subject": subject,
        "effectiveDateTime": study.created_at.isoformat(),
        "issued": study.status_changed_at.isoformat(),
        "performer": [{"display": "Pneumonia portal AI (decision support)"}],
        "imagingStudy": [{"reference": "#imaging-study"}],
        "result": [{"reference": f"#{o['id']}"} for o in observations],
        "conclusion": _conclusion(study, observations, suspected, films),
    }
    if suspected:
        report["conclusionCode"] = [{"coding": [PNEUMONIA]}]
    return report


def _report_status(study: Study) -> str:
    if study.status == Study.Status.DONE:
        return "preliminary"
    if study.status == Study.Status.FAILED:
        return "cancelled"
    return "registered"


def _conclusion(
    study: Study, observations: list[dict[str, Any]], suspected: list[dict[str, Any]], films: list[FilmResult]
) -> str:
    """The caption, then the study's warnings (selectors.warnings: as on the study page, the PDF and the
    API), then the result, or why there is none."""
    warnings = "".join(f" Warning: {warning.title}. {warning.message}" for warning in study_warnings(study=study))
    if study.status == Study.Status.FAILED:
        return f"{CAPTION}.{warnings} The AI could not assess this study: {study.failure_reason}"
    if study.status != Study.Status.DONE:
        return f"{CAPTION}.{warnings} The AI assessment is not finished."
    no_result = study_summary(status=study.status, results=films).no_result_reason
    if no_result:
        return f"{CAPTION}.{warnings} No AI result could be given. {no_result}"
    scored = [o for o in observations if "valueQuantity" in o]
    text = f"{CAPTION}.{warnings} Pneumonia suspected on {len(suspected)} of {len(scored)} analysed films"
    unanalysed = len(observations) - len(scored)
    return text + (f"; {unanalysed} not analysable." if unanalysed else ".")


def _interpretation(observation: dict[str, Any]) -> str:
    return str(observation["interpretation"][0]["coding"][0]["code"])


def _observation(number: int, prediction: Prediction, subject: dict[str, Any]) -> dict[str, Any]:
    model = prediction.model_version
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"film-{number}",
        "status": "preliminary",
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "imaging"}]}
        ],
        "code": {"coding": [PNEUMONIA], "text": f"Pneumonia, film {number} (AI)"},
        "subject": subject,
        "effectiveDateTime": prediction.created_at.isoformat(),
        "device": {"display": f"{model.name} (sha256 {model.sha256[:12]})"},
        "note": [{"text": CAPTION}],
    }
    if not prediction.analysable:
        observation["dataAbsentReason"] = {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "error"}],
            "text": f"Not analysable: {prediction.gate_reason}",
        }
        observation["interpretation"] = [{"coding": [{"system": V3_INTERPRETATION, "code": "IND"}]}]
        return observation
    word = "probability" if model.score_is_probability else "AI score"
    observation["valueQuantity"] = {"value": round(float(prediction.probability or 0), 4), "unit": word,
                                    "system": UCUM, "code": "1"}  # fmt: skip
    code = "POS" if prediction.label == Prediction.Label.PNEUMONIA else "NEG"
    observation["interpretation"] = [{"coding": [{"system": V3_INTERPRETATION, "code": code}]}]
    observation["component"] = [
        {
            "code": {"text": "Decision threshold"},
            "valueQuantity": {"value": round(float(prediction.threshold), 4), "system": UCUM, "code": "1"},
        }
    ]
    if prediction.intended_use_warning:
        observation["note"].append({"text": prediction.intended_use_warning})
    return observation
