from __future__ import annotations

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction

from diagnostics.models import Acknowledgement, Feedback, Prediction, Study, User
from diagnostics.selectors.studies import study_no_ai_result_waiting

from .audit import audit_record


def feedback_record(
    *,
    user: User,
    prediction: Prediction,
    agrees: bool,
    confirmed_label: str | None = None,
    subtype: str = "",
    comment: str = "",
) -> Feedback:
    """Record a clinician agreeing with, or correcting, an AI assessment.

    `prediction` must come from an access-checked selector. When agreeing, the
    confirmed label is the prediction's; when correcting, it must differ from it.
    Earlier feedback is kept: the newest one is the clinician's current verdict.
    """
    if prediction.image.study.patient.team_id != user.team_id:
        raise PermissionDenied("This prediction belongs to another care team.")
    if prediction.role != Prediction.Role.PRIMARY:
        raise ValidationError("Feedback can only be given on an assessment shown to clinicians.")
    if not prediction.analysable:
        raise ValidationError("The AI did not assess this film (not analysable): there is no AI result to agree with.")
    if agrees:
        if confirmed_label not in (None, "", prediction.label):
            raise ValidationError({"confirmed_label": "Agreeing keeps the AI's label; choose 'correct' to change it."})
        confirmed_label = prediction.label
    elif confirmed_label not in Prediction.Label.values or confirmed_label == prediction.label:
        raise ValidationError({"confirmed_label": "A correction must name the other label (NORMAL or PNEUMONIA)."})
    if subtype and (subtype not in Feedback.Subtype.values or confirmed_label != Prediction.Label.PNEUMONIA):
        raise ValidationError({"subtype": "Bacterial or viral applies only to pneumonia."})
    feedback = Feedback.objects.create(
        prediction=prediction,
        clinician=user,
        agrees=agrees,
        confirmed_label=confirmed_label,
        subtype=subtype,
        comment=comment.strip(),
    )
    audit_record(
        action="feedback.recorded",
        actor=user,
        target=feedback,
        team_id=user.team_id,
        detail={"prediction": prediction.pk, "agrees": agrees, "confirmed_label": confirmed_label, "subtype": subtype},
    )
    return feedback


def acknowledgement_record(*, user: User, prediction: Prediction, comment: str = "") -> Acknowledgement:
    """Record that a clinician has seen a film the AI could not assess ("seen: no AI result").

    `prediction` must come from an access-checked selector and be a refusal of the input gate shown to
    clinicians: a scored film is read with feedback_record (agree or correct), not acknowledged. Its
    study then counts as read (selectors.study_read_exists). Earlier acknowledgements are kept.
    """
    if prediction.image.study.patient.team_id != user.team_id:
        raise PermissionDenied("This prediction belongs to another care team.")
    if prediction.role != Prediction.Role.PRIMARY:
        raise ValidationError("Only an assessment shown to clinicians can be acknowledged.")
    if prediction.analysable:
        raise ValidationError("The AI assessed this film: record a reading (agree or correct) instead.")
    acknowledgement = Acknowledgement.objects.create(
        study_id=prediction.image.study_id, prediction=prediction, clinician=user, comment=comment.strip()
    )
    audit_record(
        action="acknowledgement.recorded",
        actor=user,
        target=acknowledgement,
        team_id=user.team_id,
        detail={"prediction": prediction.pk, "gate_code": prediction.gate_code},
    )
    return acknowledgement


def study_acknowledge_no_ai_result(*, user: User, study: Study, comment: str = "") -> list[Acknowledgement]:
    """'Seen: no AI result' for a study (from study_get_for_user), in one transaction: the study page's
    and the API's one action for a study that has no AI result to read.

    Every film whose newest assessment shown to clinicians is a refusal nobody has acknowledged gets its
    own acknowledgement. When the study has no scored film and the AI left some film (or the study)
    without any assessment - its analysis failed, or it ended with nothing stored - the study itself is
    acknowledged once (prediction empty), with the failure reason in the audit event. Refused while the
    study is queued or running (its result may still come), and when there is nothing left to acknowledge
    (selectors.study_no_ai_result_waiting says what is waiting).
    """
    if study.patient.team_id != user.team_id:
        raise PermissionDenied("This study belongs to another care team.")
    if study.status in (Study.Status.QUEUED, Study.Status.RUNNING):
        raise ValidationError("The AI is still analysing this study: wait for its result.")
    waiting = study_no_ai_result_waiting(study=study)
    if not waiting:
        if waiting.scored:
            raise ValidationError("The AI assessed this study: record a reading (agree or correct) instead.")
        raise ValidationError("No film of this study is waiting to be acknowledged.")
    with transaction.atomic():
        acknowledged = [acknowledgement_record(user=user, prediction=p, comment=comment) for p in waiting.films]
        if waiting.whole_study:
            acknowledgement = Acknowledgement.objects.create(study=study, clinician=user, comment=comment.strip())
            audit_record(
                action="acknowledgement.recorded",
                actor=user,
                target=acknowledgement,
                team_id=user.team_id,
                detail={"study": study.pk, "status": study.status, "failure_reason": study.failure_reason},
            )
            acknowledged.append(acknowledgement)
    return acknowledged
