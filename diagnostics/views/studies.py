from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponse
from django.shortcuts import redirect, render

from diagnostics.forms import StudyUploadForm
from diagnostics.http import AuthenticatedHttpRequest
from diagnostics.models import Study
from diagnostics.selectors import patient_get_for_user, study_get_for_user, study_list_for_user
from diagnostics.services.audit import audit_record
from diagnostics.services.images import image_validate_uploaded_files
from diagnostics.services.studies import study_create

PENDING = (Study.Status.QUEUED, Study.Status.RUNNING)


@login_required
def worklist(request: AuthenticatedHttpRequest) -> HttpResponse:
    studies = study_list_for_user(user=request.user)
    status = request.GET.get("status", "")
    if status in Study.Status.values:
        studies = studies.filter(status=status)
    return render(
        request,
        "diagnostics/worklist.html",
        {"studies": studies[:200], "status": status, "statuses": Study.Status.choices},
    )


@login_required
def study_new(request: AuthenticatedHttpRequest, patient_id: int) -> HttpResponse:
    patient = patient_get_for_user(user=request.user, patient_id=patient_id)
    form = StudyUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            uploads = image_validate_uploaded_files(files=form.cleaned_data["images"])
            study = study_create(
                user=request.user,
                patient=patient,
                uploads=uploads,
                accession_number=form.cleaned_data["accession_number"],
                modality=form.cleaned_data["modality"],
                view_position=form.cleaned_data["view_position"],
            )
        except ValidationError as error:
            for message in error.messages:
                form.add_error("images", message)
        except PermissionDenied as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, "Study uploaded and queued for AI assessment.")
            return redirect("study_detail", study_id=study.pk)
    status = 400 if request.method == "POST" else 200
    return render(request, "diagnostics/study_form.html", {"form": form, "patient": patient}, status=status)


@login_required
def study_detail(request: AuthenticatedHttpRequest, study_id: int) -> HttpResponse:
    study = study_get_for_user(user=request.user, study_id=study_id)
    audit_record(action="study.viewed", actor=request.user, target=study, team_id=study.patient.team_id)
    return render(
        request,
        "diagnostics/study_detail.html",
        {"study": study, "patient": study.patient, "pending": study.status in PENDING},
    )
