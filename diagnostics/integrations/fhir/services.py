"""A study's AI result as FHIR R4 (validated against R4B by the tests) for the hospital's EHR.

A DiagnosticReport per study, with contained resources: one Observation per film, the ImagingStudy (its
DICOM StudyInstanceUID and accession number, the modality the films record), and one Media per film (the
captioned capture with its heatmap, the same picture as the Secondary Capture sent to the PACS).

- **subject**: a reference to the Patient (`Patient/patient-<id>`, served by this endpoint) with the
  medical record number as identifier, typed MR, in the system settings.FHIR_MRN_SYSTEM names (no system
  when none is configured: never the requesting host, never a portal-private URN).
- **effectiveDateTime**: when the films were taken (the DICOM StudyDate and StudyTime of the first film
  that records them, in the portal's time zone), else the upload time, and a note says so.
- **basedOn**: the order, a logical reference to a ServiceRequest by its accession number (typed ACSN, in
  settings.FHIR_ACCESSION_SYSTEM); the ImagingStudy carries the same identifier.
- **presentedForm**: the study's PDF report (Binary/report-<id>); **media**: the captures (Binary/capture-<id>).
- **identifier**: the Structured Report's SOP Instance UID when one was sent to a PACS, and the study id in
  settings.FHIR_REPORT_ID_SYSTEM when configured.

Codes: category RAD (HL7 v2-0074), code LOINC 18748-4 "Diagnostic imaging study"; each Observation SNOMED CT
233604007 "Pneumonia" with the score as a unitless Quantity (UCUM "1"), interpretation POS / NEG
(v3 ObservationInterpretation), the decision threshold as a component, and for a film the AI did not
analyse no value but a dataAbsentReason and IND. A film the model calls pneumonia, from a model with a
subtype head, gets a second Observation derived from the first: the AI's bacterial-or-viral suggestion
(SNOMED CT 53084003 / 75570004) with P(viral), its threshold and the accuracy expected on new patients. The
report is `preliminary`: an AI result is not a clinician's verified report.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.conf import settings
from django.utils import timezone

from diagnostics.formatting.subtype import subtype_label_words, subtype_sentence
from diagnostics.formatting.words import dicom_date
from diagnostics.integrations.pacs_out.services import CAPTION, MANUFACTURER  # the same words on every channel
from diagnostics.models import Image, PacsDelivery, Patient, Prediction, Study
from diagnostics.selectors import FilmResult, study_film_results, study_summary
from diagnostics.selectors.warnings import study_warnings
from ml.serving.decode import ImageDecodeError, read_dicom_dataset

SNOMED, LOINC, UCUM = "http://snomed.info/sct", "http://loinc.org", "http://unitsofmeasure.org"
V3_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
V2_IDENTIFIER_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0203"
DICOM_UID_SYSTEM = "urn:dicom:uid"
DICOM_MODALITY_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
PNEUMONIA = {"system": SNOMED, "code": "233604007", "display": "Pneumonia"}
VIRAL_PNEUMONIA = {"system": SNOMED, "code": "75570004", "display": "Viral pneumonia"}
BACTERIAL_PNEUMONIA = {"system": SNOMED, "code": "53084003", "display": "Bacterial pneumonia"}
FHIR_VERSION = "4.3.0"  # R4B: what the tests validate against; every resource used here is unchanged from R4


def _identifier(type_code: str, type_display: str, system: str, value: str) -> dict[str, Any]:
    identifier: dict[str, Any] = {
        "type": {"coding": [{"system": V2_IDENTIFIER_TYPE, "code": type_code, "display": type_display}]},
        "value": value,
    }
    if system:
        identifier["system"] = system
    return identifier


def patient_mrn_identifier(patient: Patient) -> dict[str, Any]:
    return _identifier("MR", "Medical record number", settings.FHIR_MRN_SYSTEM, patient.medical_record_number)


def accession_identifier(accession_number: str) -> dict[str, Any]:
    return _identifier("ACSN", "Accession ID", settings.FHIR_ACCESSION_SYSTEM, accession_number)


def patient_reference(patient: Patient) -> dict[str, Any]:
    return {
        "reference": f"Patient/patient-{patient.pk}",
        "type": "Patient",
        "identifier": patient_mrn_identifier(patient),
        "display": patient.name,
    }


def patient_fhir_resource(*, patient: Patient) -> dict[str, Any]:
    """`patient` from patient_get_for_user (access-checked)."""
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": f"patient-{patient.pk}",
        "identifier": [patient_mrn_identifier(patient)],
        "name": [{"text": patient.name}],
        "gender": {"M": "male", "F": "female", "O": "other"}.get(str(patient.sex), "unknown"),
    }
    if patient.birth_date is not None:
        resource["birthDate"] = patient.birth_date.isoformat()
    return resource


def study_effective(study: Study) -> tuple[datetime.datetime | datetime.date, bool]:
    """When the study's films were taken: the first film's DICOM StudyDate (with its StudyTime when it has
    one, read in the portal's time zone: DICOM gives no offset), and True; else the upload time and False."""
    for image in study.images.all():
        metadata = image.dicom_metadata or {}
        day = dicom_date(metadata.get("StudyDate"))
        if day is None:
            continue
        time = _dicom_time(metadata.get("StudyTime") or _header_value(image, "StudyTime"))
        if time is None:
            return day, True
        return timezone.make_aware(datetime.datetime.combine(day, time), timezone.get_default_timezone()), True
    return study.created_at, False


def _header_value(image: Image, keyword: str) -> str:
    """One attribute of a stored DICOM film's header (films stored before the portal kept it in
    dicom_metadata); header only, no pixel read. '' when the film has none or is not DICOM."""
    if image.format != Image.Format.DICOM:
        return ""
    from pydicom.errors import InvalidDicomError

    try:
        with image.file.open("rb") as handle:
            # Bounded like every other read (a deflated file inflated within its cap): films stored before
            # the bounds came in were not checked.
            dataset = read_dicom_dataset(handle.read(), stop_before_pixels=True, specific_tags=[keyword])
    except (InvalidDicomError, ImageDecodeError, ValueError, EOFError, OSError, TypeError, KeyError):
        return ""
    return str(dataset.get(keyword, "") or "")


def _dicom_time(value: object) -> datetime.time | None:
    """A DICOM TM value (HH, HHMM, HHMMSS, HHMMSS.FFFFFF) as a time; None if absent or malformed."""
    text = str(value or "").strip().replace(":", "")
    whole, _, fraction = text.partition(".")
    if len(whole) not in (2, 4, 6) or not whole.isdigit() or (fraction and not fraction.isdigit()):
        return None
    parts = [int(whole[i : i + 2]) for i in range(0, len(whole), 2)] + [0, 0]
    try:
        return datetime.time(parts[0], parts[1], parts[2], int((fraction + "000000")[:6]) if fraction else 0)
    except ValueError:
        return None


def study_modalities(study: Study) -> list[str]:
    """The modalities the films' headers record, in order, else the study's recorded modality."""
    found: list[str] = []
    for image in study.images.all():
        modality = str((image.dicom_metadata or {}).get("Modality", "") or "").strip().upper()
        if modality and modality not in found:
            found.append(modality)
    return found or [study.modality]


def study_fhir_report(*, study: Study, base_url: str) -> dict[str, Any]:
    """`study` from study_get_for_user (access-checked, predictions prefetched). `base_url`: where this
    server's FHIR endpoint answers (the attachments' URLs), never an identifier system."""
    patient = study.patient
    subject = patient_reference(patient)
    films = study_film_results(study=study)
    observations = [_observation(f.number, f.prediction, subject) for f in films if f.prediction is not None]
    # The bacterial-or-viral suggestion, where the model gives one: a second Observation per film, derived from
    # the first (kept out of `observations`, which the conclusion counts).
    subtypes = [
        _subtype_observation(f.number, f.prediction, subject)
        for f in films
        if f.prediction is not None and f.prediction.subtype is not None
    ]
    effective, from_films = study_effective(study)
    captures = _sent_captures(study)
    media = [_media(f, subject, base_url, captures.get(f.number)) for f in films]
    imaging_study = _imaging_study(study, subject, effective, len(films))
    suspected = [o for o in observations if _interpretation(o) == "POS"]
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": f"study-{study.pk}",
        "meta": {"lastUpdated": study.status_changed_at.isoformat()},
        "contained": [imaging_study, *observations, *subtypes, *media],
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
        "effectiveDateTime": effective.isoformat(),
        "issued": study.status_changed_at.isoformat(),
        "performer": [{"display": "Pneumonia portal AI (decision support)"}],
        "imagingStudy": [{"reference": "#imaging-study"}],
        "result": [{"reference": f"#{o['id']}"} for o in [*observations, *subtypes]],
        "conclusion": _conclusion(study, observations, suspected, films, from_films),
    }
    identifiers = _report_identifiers(study)
    if identifiers:
        report["identifier"] = identifiers
    if study.accession_number:
        report["basedOn"] = [{"type": "ServiceRequest", "identifier": accession_identifier(study.accession_number)}]
    if media:
        report["media"] = [
            {"comment": f"Film {f.number}: the film with the AI's heatmap and caption",
             "link": {"reference": f"#{m['id']}"}}
            for f, m in zip(films, media, strict=True)
        ]  # fmt: skip
    if study.status == Study.Status.DONE:
        report["presentedForm"] = [
            {
                "contentType": "application/pdf",
                "language": "en",
                "url": f"{base_url}/Binary/report-{study.pk}",
                "title": "AI report (PDF), not a diagnosis",
            }
        ]
    if suspected:
        report["conclusionCode"] = [{"coding": [PNEUMONIA]}]
    return report


def _report_identifiers(study: Study) -> list[dict[str, Any]]:
    identifiers = []
    report_uid = (
        study.pacs_deliveries.filter(kind=PacsDelivery.Kind.STRUCTURED_REPORT, status=PacsDelivery.Status.DELIVERED)
        .order_by("-pk")
        .values_list("sop_instance_uid", flat=True)
        .first()
    )
    if report_uid:  # the DICOM SR in the PACS holds the same result
        identifiers.append({"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{report_uid}"})
    if settings.FHIR_REPORT_ID_SYSTEM:
        identifiers.append({"system": settings.FHIR_REPORT_ID_SYSTEM, "value": str(study.pk)})
    return identifiers


def _sent_captures(study: Study) -> dict[int, str]:
    """Film number -> SOP Instance UID of its Secondary Capture stored on the PACS (captures follow the films'
    order, as pacs_out numbers them)."""
    uids = study.pacs_deliveries.filter(kind=PacsDelivery.Kind.SECONDARY_CAPTURE).order_by("pk")
    return {
        number: uid
        for number, (uid, status) in enumerate(uids.values_list("sop_instance_uid", "status"), start=1)
        if status == PacsDelivery.Status.DELIVERED
    }


def _imaging_study(
    study: Study, subject: dict[str, Any], effective: datetime.datetime | datetime.date, films: int
) -> dict[str, Any]:
    imaging_study: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "id": "imaging-study",
        "status": "available",
        "subject": subject,
        "numberOfInstances": films,
        "modality": [{"system": DICOM_MODALITY_SYSTEM, "code": code} for code in study_modalities(study)],
    }
    if isinstance(effective, datetime.datetime):
        imaging_study["started"] = effective.isoformat()
    identifiers = []
    if study.study_instance_uid:
        identifiers.append({"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{study.study_instance_uid}"})
    if study.accession_number:
        identifiers.append(accession_identifier(study.accession_number))
    if identifiers:
        imaging_study["identifier"] = identifiers
    return imaging_study


def _media(film: FilmResult, subject: dict[str, Any], base_url: str, sent_uid: str | None) -> dict[str, Any]:
    media: dict[str, Any] = {
        "resourceType": "Media",
        "id": f"capture-{film.number}",
        "status": "completed",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/media-type", "code": "image"}]},
        "subject": subject,
        "content": {
            "contentType": "image/png",
            "url": f"{base_url}/Binary/capture-{film.image.pk}",
            "title": f"Film {film.number} with the AI's heatmap and caption ({CAPTION})",
        },
    }
    if sent_uid:  # the same picture, as the Secondary Capture stored on the PACS
        media["identifier"] = [{"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{sent_uid}"}]
    return media


def _report_status(study: Study) -> str:
    if study.status == Study.Status.DONE:
        return "preliminary"
    if study.status == Study.Status.FAILED:
        return "cancelled"
    return "registered"


def _conclusion(
    study: Study,
    observations: list[dict[str, Any]],
    suspected: list[dict[str, Any]],
    films: list[FilmResult],
    from_films: bool,
) -> str:
    """The caption, then the study's warnings (selectors.warnings: as on the study page, the PDF and the
    API), then the result, or why there is none; and when the time is the upload's, that it is."""
    warnings = "".join(f" Warning: {warning.title}. {warning.message}" for warning in study_warnings(study=study))
    when = "" if from_films else " The films record no DICOM study date: the effective time is the upload time."
    if study.status == Study.Status.FAILED:
        return f"{CAPTION}.{warnings} The AI could not assess this study: {study.failure_reason}{when}"
    if study.status != Study.Status.DONE:
        return f"{CAPTION}.{warnings} The AI assessment is not finished.{when}"
    no_result = study_summary(status=study.status, results=films).no_result_reason
    if no_result:
        return f"{CAPTION}.{warnings} No AI result could be given. {no_result}{when}"
    scored = [o for o in observations if "valueQuantity" in o]
    text = f"{CAPTION}.{warnings} Pneumonia suspected on {len(suspected)} of {len(scored)} analysed films"
    unanalysed = len(observations) - len(scored)
    return text + (f"; {unanalysed} not analysable." if unanalysed else ".") + when


def _interpretation(observation: dict[str, Any]) -> str:
    return str(observation["interpretation"][0]["coding"][0]["code"])


def _ai_observation(observation_id: str, text: str, prediction: Prediction, subject: dict[str, Any]) -> dict[str, Any]:
    """What every Observation of a film's AI assessment starts with: its id, a preliminary imaging Pneumonia
    observation of `subject` in words `text`, when the model made it and which model."""
    model = prediction.model_version
    return {
        "resourceType": "Observation",
        "id": observation_id,
        "status": "preliminary",
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "imaging"}]}
        ],
        "code": {"coding": [PNEUMONIA], "text": text},
        "subject": subject,
        "effectiveDateTime": prediction.created_at.isoformat(),
        "device": {"display": f"{model.name} (sha256 {model.sha256[:12]})"},
    }


def _fraction(value: float, *, unit: str | None = None) -> dict[str, Any]:
    """A score, probability or rate as a unitless Quantity (UCUM "1"), to four decimals, `unit` its name."""
    quantity: dict[str, Any] = {"value": round(float(value), 4)}
    if unit is not None:
        quantity["unit"] = unit
    return {**quantity, "system": UCUM, "code": "1"}


def _observation(number: int, prediction: Prediction, subject: dict[str, Any]) -> dict[str, Any]:
    model = prediction.model_version
    observation = _ai_observation(f"film-{number}", f"Pneumonia, film {number} (AI)", prediction, subject)
    observation["note"] = [{"text": CAPTION}]
    if not prediction.analysable:
        observation["dataAbsentReason"] = {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "error"}],
            "text": f"Not analysable: {prediction.gate_reason}",
        }
        observation["interpretation"] = [{"coding": [{"system": V3_INTERPRETATION, "code": "IND"}]}]
        return observation
    word = "probability" if model.score_is_probability else "AI score"
    observation["valueQuantity"] = _fraction(prediction.probability or 0, unit=word)
    code = "POS" if prediction.label == Prediction.Label.PNEUMONIA else "NEG"
    observation["interpretation"] = [{"coding": [{"system": V3_INTERPRETATION, "code": code}]}]
    observation["component"] = [
        {"code": {"text": "Decision threshold"}, "valueQuantity": _fraction(prediction.threshold)}
    ]
    if prediction.intended_use_warning:
        observation["note"].append({"text": prediction.intended_use_warning})
    return observation


def _subtype_observation(number: int, prediction: Prediction, subject: dict[str, Any]) -> dict[str, Any]:
    """The AI's bacterial-or-viral suggestion for a film it calls pneumonia (Prediction.subtype): the suggested
    SNOMED CT disorder, P(viral) and the accuracy expected on new patients as components, in words as a note."""
    subtype = prediction.subtype
    assert subtype is not None  # noqa: S101 - the caller keeps films without one out
    components = [
        {
            "code": {
                "text": "Probability that the pneumonia is viral (AI, calibrated)"
                if subtype["probability_calibrated"]
                else "AI score for viral pneumonia (not a calibrated probability)"
            },
            "valueQuantity": _fraction(subtype["probability"]),
        },
        {
            "code": {"text": "Decision threshold (viral at or above)"},
            "valueQuantity": _fraction(subtype["threshold"]),
        },
    ]
    if subtype["expected_accuracy"] is not None:
        components.append(
            {
                "code": {"text": "Accuracy of this suggestion expected on new patients"},
                "valueQuantity": _fraction(subtype["expected_accuracy"]),
            }
        )
    text = f"Bacterial or viral pneumonia, film {number} (AI suggestion)"
    return {
        **_ai_observation(f"film-{number}-subtype", text, prediction, subject),
        "valueCodeableConcept": {
            "coding": [VIRAL_PNEUMONIA if subtype["label"] == "viral" else BACTERIAL_PNEUMONIA],
            "text": subtype_label_words(subtype),
        },
        "derivedFrom": [{"reference": f"#film-{number}"}],
        "component": components,
        "note": [{"text": subtype_sentence(subtype)}],
    }


def fhir_search_bundle(*, reports: list[dict[str, Any]], self_url: str, base_url: str) -> dict[str, Any]:
    """A searchset Bundle of DiagnosticReports (each already built for an access-checked study)."""
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": timezone.now().isoformat(),
        "total": len(reports),
        "link": [{"relation": "self", "url": self_url}],
        "entry": [
            {"fullUrl": f"{base_url}/DiagnosticReport/{r['id']}", "resource": r, "search": {"mode": "match"}}
            for r in reports
        ],
    }


SEARCH_PARAMETERS = {
    "patient.identifier": ("token", "The patient's medical record number: system|value, |value or value"),
    "patient": ("reference", "The patient: Patient/patient-<id> or patient-<id>"),
    "subject": ("reference", "As patient"),
    "date": ("date", "When the films were taken (effectiveDateTime): eq, ge, gt, le, lt prefixes; repeatable"),
    "identifier": ("token", "The accession number (ACSN) or a report identifier: system|value or value"),
    "status": ("token", "preliminary (done), cancelled (failed), registered (not finished)"),
    "_count": ("number", "At most this many reports, newest first (default 20, at most 100)"),
}


def fhir_capability_statement(*, base_url: str) -> dict[str, Any]:
    """What this endpoint supports: read and search of DiagnosticReport, read of Patient and Binary."""
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-12-07",
        "publisher": MANUFACTURER,
        "kind": "instance",
        "implementation": {"description": "Pneumonia portal AI results (decision support)", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "documentation": (
                    "Every request but this one needs an API token (Authorization: Token <key>); each answers only "
                    "the token's care team and is audited. A search needs patient.identifier, patient, subject or "
                    "identifier."
                ),
                "security": {"service": [{"text": "API token (Authorization: Token <key>)"}]},
                "resource": [
                    {
                        "type": "DiagnosticReport",
                        "interaction": [{"code": "read"}, {"code": "search-type"}],
                        "searchParam": [
                            {"name": name, "type": kind, "documentation": words}
                            for name, (kind, words) in SEARCH_PARAMETERS.items()
                            if not name.startswith("_")
                        ],
                    },
                    {"type": "Patient", "interaction": [{"code": "read"}]},
                    {
                        "type": "Binary",
                        "interaction": [{"code": "read"}],
                        "documentation": "report-<study id>: the PDF report; capture-<image id>: a film's captioned "
                        "capture (PNG)",
                    },  # fmt: skip
                ],
            }
        ],
    }
