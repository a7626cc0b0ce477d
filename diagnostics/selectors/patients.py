"""A care team's patients."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from django.db.models import QuerySet
from django.http import Http404

from diagnostics.models import (
    Patient,
    User,
)


def patient_list_for_user(*, user: User | AnonymousUser) -> QuerySet[Patient]:
    if not user.is_authenticated or user.team_id is None:
        return Patient.objects.none()
    return Patient.objects.filter(team_id=user.team_id)


def patient_get_for_user(*, user: User | AnonymousUser, patient_id: int) -> Patient:
    try:
        return patient_list_for_user(user=user).get(pk=patient_id)
    except (Patient.DoesNotExist, ValueError, TypeError):
        raise Http404("No such patient.") from None
