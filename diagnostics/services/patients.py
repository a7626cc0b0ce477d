from __future__ import annotations

import datetime

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction

from diagnostics.models import Patient, User

from .audit import audit_record


def patient_create(
    *,
    user: User,
    medical_record_number: str,
    name: str,
    birth_date: datetime.date,
    sex: str = Patient.Sex.UNKNOWN,
) -> Patient:
    """Register a patient in the user's care team."""
    if user.team_id is None:
        raise PermissionDenied("Your account is not a member of a care team.")
    mrn = medical_record_number.strip()
    if not mrn:
        raise ValidationError({"medical_record_number": "A medical record number is required."})
    if birth_date > datetime.date.today():
        raise ValidationError({"birth_date": "The birth date cannot be in the future."})
    try:
        with transaction.atomic():
            patient = Patient.objects.create(
                team_id=user.team_id,
                medical_record_number=mrn,
                name=name.strip(),
                birth_date=birth_date,
                sex=sex,
                created_by=user,
            )
    except IntegrityError:
        raise ValidationError(
            {"medical_record_number": f"A patient with record number {mrn} already exists in your team."}
        ) from None
    audit_record(action="patient.created", actor=user, target=patient, team_id=patient.team_id)
    return patient
