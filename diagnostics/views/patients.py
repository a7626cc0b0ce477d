from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone

from diagnostics.forms import PatientForm
from diagnostics.http import AuthenticatedHttpRequest
from diagnostics.selectors import patient_get_for_user, patient_list_for_user, study_list_for_user
from diagnostics.selectors.warnings import study_list_with_warning_facts
from diagnostics.services.audit import audit_read, audit_record
from diagnostics.services.patients import patient_create


@login_required
def patient_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    patients = patient_list_for_user(user=request.user)
    query = request.GET.get("q", "").strip()
    if query:
        patients = patients.filter(name__icontains=query) | patients.filter(medical_record_number__icontains=query)
    shown = list(patients[:200])
    audit_read(action="patient.listed", actor=request.user, team_id=request.user.team_id,
               detail={"query": query[:100], "rows": len(shown)})  # fmt: skip
    return render(request, "diagnostics/patient_list.html", {"patients": shown, "query": query})


@login_required
def patient_new(request: AuthenticatedHttpRequest) -> HttpResponse:
    form = PatientForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            patient = patient_create(user=request.user, **form.cleaned_data)
        except ValidationError as error:
            for field, field_errors in error.message_dict.items():
                for message in field_errors:
                    form.add_error(field if field in form.fields else None, message)
        except PermissionDenied as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"Patient {patient.name} registered.")
            return redirect("patient_detail", patient_id=patient.pk)
    return render(request, "diagnostics/patient_form.html", {"form": form})


@login_required
def patient_detail(request: AuthenticatedHttpRequest, patient_id: int) -> HttpResponse:
    patient = patient_get_for_user(user=request.user, patient_id=patient_id)
    audit_record(action="patient.viewed", actor=request.user, target=patient, team_id=patient.team_id)
    studies = study_list_with_warning_facts(study_list_for_user(user=request.user).filter(patient=patient))
    context = {"patient": patient, "studies": studies, "today": timezone.localdate()}
    return render(request, "diagnostics/patient_detail.html", context)
