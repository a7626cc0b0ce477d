from __future__ import annotations

from django.core.exceptions import PermissionDenied, ValidationError

from diagnostics.models import Feedback, Prediction, User

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
