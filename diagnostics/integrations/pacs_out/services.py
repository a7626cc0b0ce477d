"""AI results back to the PACS a study came from: a DICOM Structured Report and Secondary Captures.

For each finished study whose DicomPeer takes results, in the study's own StudyInstanceUID (IHE AI
Results: the radiologist finds them beside the films):

- one **Structured Report** (Comprehensive 3D SR, TID 1500 Imaging Measurement Report, built with
  highdicom): per film, the finding *Pneumonia* present / absent / undetermined (not analysable), the
  score with its meaning (probability when calibrated, else AI score), the decision threshold, the
  reason when the film was not analysable, the algorithm's name and version, and the film it refers to;
- one **Secondary Capture** per film: the film with the heatmap blended on (stored with the prediction,
  so nothing is waited for) and a burned-in caption "AI result, not a diagnosis" with the finding, score
  and model, and "heatmap not available" when the film has none (a model whose architecture gives none).

Each object is a PacsDelivery row with its SOP Instance UID fixed at creation, so a retry sends the
same instance again (the PACS replaces it, no duplicates). Sent by C-STORE as settings.DICOM_AE_TITLE;
retried with backoff by the task (tasks.py beside this module) and recorded like webhooks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from diagnostics.models import Image, ModelVersion, PacsDelivery, Prediction, Study
from diagnostics.selectors.warnings import (
    AGE_UNKNOWN,
    OUTSIDE_INTENDED_USE,
    WRONG_PATIENT,
    StudyWarning,
    study_warnings,
)
from diagnostics.services.audit import audit_record
from diagnostics.services.reports import image_display_pixels, overlay_pixels
from ml.serving.decode import read_dicom_dataset

logger = logging.getLogger(__name__)

CAPTION = "AI result, not a diagnosis"
MANUFACTURER = "Pneumonia portal"
SR_SERIES_NUMBER, SC_SERIES_NUMBER = 9901, 9902
PRIVATE_SCHEME = "99PNEUMOPORTAL"
# The AI as the SR's observer device (TID 1004): one UID for every report, so a PACS or an AIR display sees
# one device across reports (the algorithm and its version are in each group's TID 4019).
DEVICE_OBSERVER_UID = "2.25.191115216431712359369449395495557782100"  # generate_uid(None, entropy_srcs=[...])


class PacsNotDelivered(Exception):
    """Some results could not be stored to the PACS; the task retries."""


def pacs_enqueue_results(*, study_id: int) -> None:
    """Queue the results for the PACS a done study came from, if it came from one."""
    if Study.objects.filter(pk=study_id, dicom_peer__isnull=False).exists():
        from .tasks import send_pacs_results  # the task imports this module

        send_pacs_results.delay(study_id)


def pacs_results_wanted(*, study: Study) -> bool:
    return study.dicom_peer is not None and study.dicom_peer.sends_results


def pacs_send_results(*, study_id: int, final: bool) -> None:
    """Build (once) and store the study's SR and Secondary Captures on its peer; raise to retry."""
    study = Study.objects.select_related("dicom_peer", "patient").get(pk=study_id)
    if not pacs_results_wanted(study=study) or study.status != Study.Status.DONE:
        return
    films = _films(study)
    deliveries = _deliveries(study, films)
    pending = [d for d in deliveries if d.status != PacsDelivery.Status.DELIVERED]
    if not pending:
        return
    warnings = study_warnings(study=study)
    datasets, errors = _build_all(study, films, pending, warnings)
    built = [(d, datasets[d.pk]) for d in pending if d.pk in datasets]
    try:
        errors |= _c_store(study, built) if built else {}
    except Exception as failure:  # noqa: BLE001 - whatever the network layer raises is this attempt's error
        logger.exception("Study %s: storing the results on %s failed", study.pk, study.dicom_peer)
        errors |= {d.pk: f"sending failed: {type(failure).__name__}: {failure}" for d, _ in built}
    now = timezone.now()
    for delivery in pending:
        delivery.attempts += 1
        error = errors.get(delivery.pk)
        if error is None:
            delivery.status, delivery.delivered_at, delivery.last_error = PacsDelivery.Status.DELIVERED, now, ""
        else:
            delivery.last_error = error[:500]
            if final:
                delivery.status = PacsDelivery.Status.FAILED
        delivery.save(update_fields=["attempts", "status", "delivered_at", "last_error"])
        audit_record(
            action=f"pacs.{delivery.status}" if error is None or final else "pacs.attempt_failed",
            target=study,
            team_id=study.patient.team_id,
            detail={"kind": delivery.kind, "sop_instance_uid": delivery.sop_instance_uid, "error": error or ""},
        )
    if errors and not final:
        raise PacsNotDelivered(f"{len(errors)} of {len(pending)} results not stored on {study.dicom_peer}")


def _build_all(
    study: Study,
    films: list[tuple[Image, Prediction | None]],
    pending: list[PacsDelivery],
    warnings: Sequence[StudyWarning],
) -> tuple[dict[int, Any], dict[int, str]]:
    """Each pending object built, or why it could not be: a writer's exception is that delivery's failed
    attempt, recorded with its error like a refused C-STORE (never a task that dies with nothing said)."""
    datasets: dict[int, Any] = {}
    errors: dict[int, str] = {}
    for delivery in pending:
        try:
            datasets[delivery.pk] = _build(study, films, delivery, warnings)
        except Exception as error:  # noqa: BLE001 - any writer failure is recorded on its delivery
            logger.exception("Study %s: building the %s %s failed", study.pk, delivery.kind, delivery.sop_instance_uid)
            errors[delivery.pk] = f"could not build the {delivery.get_kind_display()}: {type(error).__name__}: {error}"
    return datasets, errors


def _films(study: Study) -> list[tuple[Image, Prediction | None]]:
    """The study's DICOM films with their current primary prediction (the active model's, newest)."""
    films = []
    for image in study.images.filter(format=Image.Format.DICOM).order_by("pk"):
        prediction = (
            image.predictions.filter(role=Prediction.Role.PRIMARY)
            .select_related("model_version")
            .order_by("-created_at", "-pk")
            .first()
        )
        films.append((image, prediction))
    return films


def _deliveries(study: Study, films: list[tuple[Image, Prediction | None]]) -> list[PacsDelivery]:
    """The rows for this study's results, created once: their UIDs stay fixed across retries.

    Films are only ever added to a study, and Secondary Capture rows follow the films' order. When
    the PACS sent more films after results went back, the new films get their captures and the study
    a new Structured Report covering every film (the earlier one stays in the PACS, superseded)."""
    from pydicom.uid import generate_uid

    with transaction.atomic():
        Study.objects.select_for_update().filter(pk=study.pk).first()  # one creator at a time
        existing = list(study.pacs_deliveries.order_by("pk"))
        captured = sum(1 for d in existing if d.kind == PacsDelivery.Kind.SECONDARY_CAPTURE)
        if existing and captured >= len(films):
            return existing
        assert study.dicom_peer is not None
        kinds = [PacsDelivery.Kind.STRUCTURED_REPORT] + [PacsDelivery.Kind.SECONDARY_CAPTURE] * (len(films) - captured)
        rows = [
            PacsDelivery(study=study, peer=study.dicom_peer, kind=kind, sop_instance_uid=generate_uid())
            for kind in kinds
        ]
        return existing + PacsDelivery.objects.bulk_create(rows)


# Type 2 attributes of the Patient and General Study modules: present in every object sent, empty when the
# film's header has none (a PACS often sends no AccessionNumber; highdicom copies them from the film).
TYPE2_REFERENCE_ATTRIBUTES = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
)  # fmt: skip


def _source_dataset(image: Image):  # noqa: ANN202 (a pydicom Dataset)
    """The film's header (its pixels are not needed: the captures are drawn from the stored preview), with
    every Type 2 patient and study attribute the results copy present, empty where the film has none."""
    with image.file.open("rb") as handle:
        # Bounded like every other read (a deflated file inflated within its cap; ImageDecodeError past it is the
        # delivery's failed attempt): films stored before the bounds came in were not checked.
        dataset = read_dicom_dataset(handle.read(), stop_before_pixels=True)
    for keyword in TYPE2_REFERENCE_ATTRIBUTES:
        if keyword not in dataset:
            setattr(dataset, keyword, "")
    return dataset


def _build(  # noqa: ANN202
    study: Study,
    films: list[tuple[Image, Prediction | None]],
    delivery: PacsDelivery,
    warnings: Sequence[StudyWarning] = (),
):
    if delivery.kind == PacsDelivery.Kind.STRUCTURED_REPORT:
        reports = list(study.pacs_deliveries.filter(kind=PacsDelivery.Kind.STRUCTURED_REPORT).order_by("pk"))
        earlier = [d for d in reports if d.pk < delivery.pk and d.status == PacsDelivery.Status.DELIVERED]
        return build_structured_report(
            films=films,
            sop_instance_uid=delivery.sop_instance_uid,
            series_uid=_series_uid(study, "sr"),
            instance_number=[d.pk for d in reports].index(delivery.pk) + 1,
            warnings=warnings,
            predecessors=[_stored_report(study, d) for d in earlier],
        )
    captures = list(study.pacs_deliveries.filter(kind=PacsDelivery.Kind.SECONDARY_CAPTURE).order_by("pk"))
    index = [d.pk for d in captures].index(delivery.pk)
    image, prediction = films[index]
    return build_secondary_capture(
        image=image,
        prediction=prediction,
        sop_instance_uid=delivery.sop_instance_uid,
        series_uid=_series_uid(study, "sc"),
        instance_number=index + 1,
        warnings=warnings,
    )


def _stored_report(study: Study, delivery: PacsDelivery):  # noqa: ANN202 (a pydicom Dataset)
    """What a later report's Predecessor Documents Sequence names of an SR already stored on the PACS."""
    from pydicom.dataset import Dataset
    from pydicom.uid import Comprehensive3DSRStorage

    reference = Dataset()
    reference.SOPClassUID, reference.SOPInstanceUID = Comprehensive3DSRStorage, delivery.sop_instance_uid
    reference.StudyInstanceUID, reference.SeriesInstanceUID = study.study_instance_uid, _series_uid(study, "sr")
    return reference


def _series_uid(study: Study, kind: str) -> str:
    """The same series UID for a study's results on every attempt (derived, not stored)."""
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=[study.study_instance_uid, str(study.pk), kind]))


def _pneumonia_code():  # noqa: ANN202
    from highdicom.sr import CodedConcept

    return CodedConcept("233604007", "SCT", "Pneumonia")


def score_meaning(model_version: ModelVersion):  # noqa: ANN201
    """DCM 'Probability' only when the model's external calibration allows the word (as on the pages)."""
    from highdicom.sr import CodedConcept
    from pydicom.sr.codedict import codes

    return (
        codes.DCM.Probability
        if model_version.score_is_probability
        else CodedConcept("ai-score", PRIVATE_SCHEME, "Pneumonia AI score")
    )


# The study's warnings (selectors.warnings) as coded qualitative evaluations of each film's group: a code
# value is at most 16 characters and a code meaning at most 64 (DICOM SH and LO).
SR_WARNING_CODES = {
    WRONG_PATIENT: ("wrong-patient", "Film DICOM header disagrees with the patient record"),
    OUTSIDE_INTENDED_USE: ("outside-ages", "Patient age outside the AI's intended use"),
    AGE_UNKNOWN: ("age-unknown", "Patient age unknown: intended use not checked"),
}


def warning_evaluations(warnings: Sequence[StudyWarning]):  # noqa: ANN201
    """One 'AI result warning' qualitative evaluation per study warning, for every film's group."""
    import highdicom as hd

    concept = hd.sr.CodedConcept("ai-warning", PRIVATE_SCHEME, "AI result warning")
    evaluations = []
    for warning in warnings:
        value, meaning = SR_WARNING_CODES[warning.code]
        evaluations.append(hd.sr.QualitativeEvaluation(concept, hd.sr.CodedConcept(value, PRIVATE_SCHEME, meaning)))
    return evaluations


def build_structured_report(
    *,
    films: list[tuple[Image, Prediction | None]],
    sop_instance_uid: str,
    series_uid: str,
    instance_number: int = 1,
    warnings: Sequence[StudyWarning] = (),
    predecessors: Sequence[Any] = (),
):  # noqa: ANN201
    """The study's TID 1500 report. `predecessors`: the study's earlier reports already on the PACS, which this
    one revises (films were added): named in its Predecessor Documents Sequence."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    sources = [_source_dataset(image) for image, _ in films]
    groups = []
    for number, ((_image, prediction), source) in enumerate(zip(films, sources, strict=True), start=1):
        if prediction is None:
            continue
        model = prediction.model_version
        name, _, version = model.name.partition("@")
        algorithm = hd.sr.AlgorithmIdentification(name=name, version=version or model.sha256[:12])
        if prediction.analysable:
            finding = codes.SCT.Present if prediction.label == Prediction.Label.PNEUMONIA else codes.SCT.Absent
            measurements = [
                hd.sr.Measurement(
                    name=score_meaning(model),
                    value=round(float(prediction.probability or 0), 4),
                    unit=codes.UCUM.NoUnits,
                    algorithm_id=algorithm,
                ),  # fmt: skip
                hd.sr.Measurement(
                    name=hd.sr.CodedConcept("threshold", PRIVATE_SCHEME, "Decision threshold"),
                    value=round(float(prediction.threshold), 4),
                    unit=codes.UCUM.NoUnits,
                ),  # fmt: skip
            ]
            evaluations = [hd.sr.QualitativeEvaluation(_pneumonia_code(), finding)]
            if prediction.subtype is not None:  # the bacterial-or-viral suggestion (a pneumonia only)
                subtype_measurements, subtype_evaluation = _subtype_items(prediction.subtype, algorithm)
                measurements += subtype_measurements
                evaluations.append(subtype_evaluation)
        else:
            measurements = []
            evaluations = [
                hd.sr.QualitativeEvaluation(_pneumonia_code(), codes.DCM.PresenceUndetermined),
                hd.sr.QualitativeEvaluation(
                    hd.sr.CodedConcept("not-analysable", PRIVATE_SCHEME, "Not analysable by the AI"),
                    hd.sr.CodedConcept(
                        prediction.gate_code[:16] or "refused",
                        PRIVATE_SCHEME,
                        (prediction.gate_reason or "refused by the input gate")[:64],
                    ),  # fmt: skip
                ),
            ]
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"Film {number}"),
                algorithm_id=algorithm,
                finding_type=_pneumonia_code(),
                measurements=measurements or None,
                qualitative_evaluations=[*evaluations, *warning_evaluations(warnings)],
                source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
            )
        )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=DEVICE_OBSERVER_UID, name="Pneumonia AI", manufacturer_name=MANUFACTURER
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.ChestImaging,
        imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport,
    )
    content = report[0]
    content.ContentSequence.append(report_statements(warnings))
    sr = hd.sr.Comprehensive3DSR(
        evidence=sources,
        content=content,
        series_instance_uid=series_uid,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,  # not verified by a clinician
        previous_versions=list(predecessors) or None,
    )
    sr.SeriesDescription = CAPTION
    sr.CodingSchemeIdentificationSequence = [private_coding_scheme()]
    return sr


def _subtype_items(subtype: dict[str, Any], algorithm: Any) -> tuple[list[Any], Any]:
    """The AI's bacterial-or-viral suggestion (Prediction.subtype) in a film's group: P(viral) and the accuracy
    expected on new patients as measurements, the suggested disorder (SNOMED CT) as a qualitative evaluation."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    measurements = [
        hd.sr.Measurement(
            name=(
                hd.sr.CodedConcept("p-viral", PRIVATE_SCHEME, "AI suggestion: probability the pneumonia is viral")
                if subtype["probability_calibrated"]  # the main score's rule (score_meaning)
                else hd.sr.CodedConcept("viral-score", PRIVATE_SCHEME, "AI suggestion: score for viral pneumonia")
            ),
            value=round(float(subtype["probability"]), 4),
            unit=codes.UCUM.NoUnits,
            algorithm_id=algorithm,
        )
    ]
    if subtype["expected_accuracy"] is not None:
        measurements.append(
            hd.sr.Measurement(
                name=hd.sr.CodedConcept("subtype-acc", PRIVATE_SCHEME, "Expected accuracy of the subtype suggestion"),
                value=round(float(subtype["expected_accuracy"]), 4),
                unit=codes.UCUM.NoUnits,
            )
        )
    suggested = (
        hd.sr.CodedConcept("75570004", "SCT", "Viral pneumonia")
        if subtype["label"] == "viral"
        else hd.sr.CodedConcept("53084003", "SCT", "Bacterial pneumonia")
    )
    concept = hd.sr.CodedConcept("ai-subtype", PRIVATE_SCHEME, "AI suggestion: bacterial or viral")
    return measurements, hd.sr.QualitativeEvaluation(concept, suggested)


def disclaimer() -> str:
    """The caption and the intended use (settings.INTENDED_USE, as on every page), in the SR and the SC."""
    return f"{CAPTION}. Intended use: {settings.INTENDED_USE}"


def private_coding_scheme():  # noqa: ANN201
    """The Coding Scheme Identification item (SOP Common) declaring the portal's own codes, PS3.3 C.12.1."""
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = "Pneumonia portal AI result codes"
    item.CodingSchemeResponsibleOrganization = MANUFACTURER
    return item


def report_statements(warnings: Sequence[StudyWarning]):  # noqa: ANN201
    """TID 1500's 'Qualitative Evaluations' container (UMLS C0034375) at the root of the report: the
    disclaimer and each of the study's warnings in whole sentences, as TEXT items a reader sees as they are
    (the groups carry the same warnings as codes, for software)."""
    import highdicom as hd

    items = [hd.sr.TextContentItem(
        name=hd.sr.CodedConcept("ai-disclaimer", PRIVATE_SCHEME, "AI result disclaimer"),
        value=disclaimer(),
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )]  # fmt: skip
    for warning in warnings:
        items.append(
            hd.sr.TextContentItem(
                name=hd.sr.CodedConcept("ai-warning", PRIVATE_SCHEME, "AI result warning"),
                value=f"Warning: {warning.title}. {warning.message}",
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    container = hd.sr.ContainerContentItem(
        name=hd.sr.CodedConcept("C0034375", "UMLS", "Qualitative Evaluations"),
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


def caption_lines(
    prediction: Prediction | None, warnings: Sequence[StudyWarning] = (), *, detailed: bool = False
) -> list[str]:
    """The burned-in caption: the caption, the study's warnings (titles; `detailed`: the intended use, and
    each warning's whole message after its title), then this film's finding."""
    head = [CAPTION]
    if detailed:
        head.append(f"Intended use: {settings.INTENDED_USE}")
    head += [f"WARNING: {w.title}" + (f". {w.message}" if detailed else "") for w in warnings]
    if prediction is None:
        return [*head, "No AI result for this film."]
    model = prediction.model_version
    if not prediction.analysable:
        return [*head, f"Not analysable: {prediction.gate_reason}"[:120], f"Model {model.name}"]
    word = "probability" if model.score_is_probability else "AI score"
    finding = "pneumonia suspected" if prediction.label == Prediction.Label.PNEUMONIA else "no pneumonia suspected"
    return [
        *head,
        f"{finding}: {word} {prediction.probability:.2f} (threshold {prediction.threshold:.2f})",
        f"Model {model.name}" + ("" if prediction.heatmap else "; heatmap not available"),
    ]


def _wrapped(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> list[str]:
    """`text` broken into lines no wider than `width` pixels, at spaces, and inside a word that is wider."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
            continue
        lines.append("")
        for char in word:
            if lines[-1] and draw.textlength(lines[-1] + char, font=font) > width:
                lines.append("")
            lines[-1] += char
    return lines or [""]


def captioned_pixels(film_rgb: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """The film under a black band holding `lines`, wrapped to the film's width: the caption and the
    warnings in yellow, the finding in white. The band is added above the film, so no part of it is hidden."""
    film = PILImage.fromarray(film_rgb)
    font = ImageFont.load_default(size=max(12, film.height // 40))
    measure = ImageDraw.Draw(film)
    line_height = int(getattr(font, "size", 12)) + 6
    rows: list[tuple[str, tuple[int, int, int]]] = []
    for i, line in enumerate(lines):
        colour = (255, 255, 0) if i == 0 or line.startswith(("WARNING", "Intended use")) else (255, 255, 255)
        rows += [(part, colour) for part in _wrapped(measure, line, font, film.width - 12)]
    band = line_height * len(rows) + 8
    canvas = PILImage.new("RGB", (film.width, band + film.height), (0, 0, 0))
    canvas.paste(film, (0, band))
    draw = ImageDraw.Draw(canvas)
    for i, (text, colour) in enumerate(rows):
        draw.text((6, 4 + i * line_height), text, fill=colour, font=font)
    return np.asarray(canvas)


def film_capture_pixels(
    *, image: Image, prediction: Prediction | None, warnings: Sequence[StudyWarning] = ()
) -> np.ndarray:
    """The capture's picture, (H, W, 3) uint8: the film (at most 1024 px) with its heatmap blended on, under
    the caption band. The Secondary Capture sent to the PACS and FHIR's Media show this same picture."""
    film = image_display_pixels(image=image, max_side=1024)
    if prediction is not None and prediction.heatmap:
        with prediction.heatmap.open("rb") as handle:
            pixels = overlay_pixels(film=film, heatmap_png=handle.read())
    else:
        pixels = np.stack([film] * 3, axis=-1)
    return captioned_pixels(pixels, caption_lines(prediction, warnings, detailed=True))


def build_secondary_capture(
    *,
    image: Image,
    prediction: Prediction | None,
    sop_instance_uid: str,
    series_uid: str,
    instance_number: int,
    warnings: Sequence[StudyWarning] = (),
):  # noqa: ANN201
    import highdicom as hd

    source = _source_dataset(image)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=film_capture_pixels(image=image, prediction=prediction, warnings=warnings),
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=series_uid,
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        patient_orientation=("L", "F"),
    )
    _copy_anatomy(sc, source, body_part=image.study.body_part)
    sc.SeriesDescription = CAPTION
    sc.BurnedInAnnotation = "YES"
    return sc


def _copy_anatomy(sc: Any, source: Any, *, body_part: str) -> None:
    """General Series and General Image as the film says them: BodyPartExamined (the film's, else the
    study's), Laterality when the film gives one (Type 2C: needed for a paired part, which a chest is not),
    and the film's own PatientOrientation (the capture is the film scaled, neither turned nor flipped),
    empty when it gives none (Type 2C) rather than a guess."""
    sc.BodyPartExamined = str(source.get("BodyPartExamined", "") or body_part or "CHEST")[:16]
    laterality = str(source.get("Laterality", "") or "")
    if laterality in ("R", "L"):
        sc.Laterality = laterality
    elif "Laterality" in sc:
        del sc.Laterality
    orientation = source.get("PatientOrientation")
    sc.PatientOrientation = list(orientation) if orientation and len(orientation) == 2 else ""


def _c_store(study: Study, items: list) -> dict[int, str]:  # noqa: ANN001
    """C-STORE each dataset to the study's peer; returns {delivery pk: error} for those not stored."""
    from pynetdicom import AE

    peer = study.dicom_peer
    assert peer is not None and peer.port is not None
    ae = AE(ae_title=settings.DICOM_AE_TITLE)
    for sop_class in sorted({str(dataset.SOPClassUID) for _, dataset in items}):
        ae.add_requested_context(sop_class)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    started = time.perf_counter()
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.results_ae_title)
    if not assoc.is_established:
        return {d.pk: f"association with {peer.results_ae_title}@{peer.host}:{peer.port} refused or failed"
                for d, _ in items}  # fmt: skip
    errors: dict[int, str] = {}
    try:
        for delivery, dataset in items:
            try:
                status = assoc.send_c_store(dataset)
            except (ValueError, RuntimeError) as error:  # e.g. the PACS accepted no context for this class
                errors[delivery.pk] = str(error)
                continue
            code = getattr(status, "Status", None)
            if code is None or code not in (0x0000, 0xB000, 0xB007, 0xB006):
                errors[delivery.pk] = f"C-STORE status {code if code is None else hex(code)}"
    finally:
        assoc.release()
    logger.info("Study %s: %s results stored on %s in %.0f ms", study.pk, len(items) - len(errors),
                peer.ae_title, (time.perf_counter() - started) * 1000)  # fmt: skip
    return errors
