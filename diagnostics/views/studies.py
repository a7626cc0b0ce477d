from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import pluralize
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from diagnostics.forms import DicomInspectForm, FeedbackForm, StudyUploadForm, WorklistFilterForm
from diagnostics.http import AuthenticatedHttpRequest
from diagnostics.models import Acknowledgement, Feedback, Image, Prediction, Study
from diagnostics.selectors import (
    FilmResult,
    patient_get_for_user,
    study_acknowledgement_of_the_study,
    study_film_results,
    study_get_for_user,
    study_list_for_user,
    study_list_with_row_facts,
    study_no_ai_result_waiting,
    study_read_exists,
    study_summary,
)
from diagnostics.selectors.comparison import study_comparison_for_user, study_previous_for_user
from diagnostics.selectors.heatmaps import HeatmapState
from diagnostics.selectors.warnings import (
    FieldMismatch,
    dicom_header_mismatches,
    mismatch_sentence,
    study_list_with_warning_facts,
    study_warnings,
)
from diagnostics.services.audit import audit_read, audit_record
from diagnostics.services.images import (
    FileCheck,
    FilesRefused,
    StorageUnavailable,
    dicom_identity_tags,
    dicom_study_fields,
)
from diagnostics.services.reports import study_report_pdf
from diagnostics.services.studies import study_accept
from diagnostics.services.upload_admission import RETRY_AFTER_SECONDS, InferenceBacklogFull, UploadsBusy
from ml.serving.decode import ImageDecodeError, read_dicom_metadata

from .htmx import is_htmx

PENDING = (Study.Status.QUEUED, Study.Status.RUNNING)
# Rows per worklist page: a screenful or two to triage; more rows only cost rendering time.
WORKLIST_LIMIT = 50
# How far the study page's previous/next buttons follow the worklist order.
STUDY_NAVIGATION_LIMIT = 200


@login_required
@require_GET
def worklist(request: AuthenticatedHttpRequest) -> HttpResponse:
    filters = WorklistFilterForm(request.GET)
    studies_shown = study_list_with_warning_facts(
        study_list_with_row_facts(filters.filter(study_list_for_user(user=request.user)))
    )
    page = Paginator(studies_shown, WORKLIST_LIMIT).get_page(request.GET.get("page"))
    studies = list(page.object_list)
    querystring = filters.querystring()
    audit_read(action="study.listed", actor=request.user, team_id=request.user.team_id,
               detail={"query": querystring[:500], "page": page.number, "rows": len(studies)})  # fmt: skip
    context = {
        "studies": studies,
        "page": page,
        "filters": filters,
        "sort": filters.sort_key,
        "querystring": querystring,
        # The live refresh reloads the page being read, not the first one.
        "refresh_querystring": filters.querystring(page=str(page.number)) if page.number > 1 else querystring,
        "pending": any(study.status in PENDING for study in studies),
        "columns": _sort_columns(filters),
        # The reading queue's start: the first unread study in this order and these filters, at its form.
        "first_unread_id": filters.filter(study_list_for_user(user=request.user))
        .filter(~study_read_exists())
        .values_list("pk", flat=True)
        .first(),
    }
    template = "diagnostics/_worklist_table.html" if is_htmx(request) else "diagnostics/worklist.html"
    return render(request, template, context)


def _sort_columns(filters: WorklistFilterForm) -> dict[str, dict[str, str]]:
    """For each sortable column header: the link that sorts by it, or reverses it when the list is
    already sorted by it, and its aria-sort."""
    current = filters.sort_key

    def column(ascending: str, descending: str, *, first: str) -> dict[str, str]:
        if current == ascending:
            return {"href": "?" + filters.querystring(sort=descending), "aria": "ascending"}
        if current == descending:
            return {"href": "?" + filters.querystring(sort=ascending), "aria": "descending"}
        return {"href": "?" + filters.querystring(sort=first), "aria": "none"}

    return {
        "uploaded": column("oldest", "newest", first="newest"),
        "patient": column("patient", "patient_desc", first="patient"),
        "status": column("status", "status_desc", first="status"),
        "suspicion": column("probability", "triage", first="triage"),
    }


@login_required
def study_new(request: AuthenticatedHttpRequest, patient_id: int) -> HttpResponse:
    patient = patient_get_for_user(user=request.user, patient_id=patient_id)
    form = StudyUploadForm(request.POST or None, request.FILES or None)
    storage_failed, busy = False, 0
    file_checks: list[FileCheck] = []  # after a refusal: each file sent, refused (with why) or not stored
    if request.method == "POST" and form.is_valid():
        try:
            study = study_accept(
                user=request.user,
                patient=patient,
                files=[(uploaded.name or "upload", uploaded.read()) for uploaded in form.cleaned_data["images"]],
                fields={name: form.cleaned_data[name] for name in ("accession_number", "modality", "view_position")},
            ).study
        except ValidationError as error:
            for message in error.messages:
                form.add_error("images", message)
            file_checks = error.checks if isinstance(error, FilesRefused) else []
        except (PermissionDenied, StorageUnavailable, UploadsBusy, InferenceBacklogFull) as error:
            form.add_error(None, str(error))
            storage_failed = isinstance(error, StorageUnavailable)
            busy = 429 if isinstance(error, UploadsBusy) else 503 if isinstance(error, InferenceBacklogFull) else 0
        else:
            # The message stays while the study moves on (in-process tasks finish before the page loads):
            # it names what happened here; the status line below it says where the AI stands.
            count = len(form.cleaned_data["images"])
            messages.success(request, f"Study uploaded: {count} film{pluralize(count)}.")
            if is_htmx(request):
                # htmx posted the form (with a progress bar): let it navigate to the result.
                response = HttpResponse(status=204)
                response["HX-Redirect"] = reverse("study_detail", args=[study.pk])
                return response
            return redirect("study_detail", study_id=study.pk)
    status = (507 if storage_failed else busy or 400) if request.method == "POST" else 200
    template = "diagnostics/_upload_form.html" if is_htmx(request) else "diagnostics/study_form.html"
    context = {
        "form": form,
        "patient": patient,
        "upload_max_bytes": settings.UPLOAD_MAX_BYTES,
        "file_checks": file_checks,
    }
    response = render(request, template, context, status=status)
    if busy:
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


@dataclass(frozen=True)
class DicomSummary:
    filename: str
    metadata: dict[str, str]
    error: str = ""
    # How the header disagrees with the patient's record (selectors.warnings: the study's wrong-patient rule).
    mismatches: tuple[FieldMismatch, ...] = ()

    @property
    def mismatch_fields(self) -> list[str]:
        return [mismatch.field for mismatch in self.mismatches]

    @property
    def mismatch_sentence(self) -> str:
        return mismatch_sentence(self.mismatches)

    @property
    def view_position(self) -> str:
        return dicom_study_fields(self.metadata).get("view_position", "")

    @property
    def modality(self) -> str:
        return dicom_study_fields(self.metadata).get("modality", "")


@login_required
@require_POST
def study_inspect_dicom(request: AuthenticatedHttpRequest, patient_id: int) -> HttpResponse:
    """Read chosen DICOM files' headers (no pixel is decoded) and show their metadata, to offer it for the
    study form.

    The metadata is only a suggestion shown to the clinician: it never decides access, and
    a patient ID that differs from the record number is pointed out, not trusted.
    """
    patient = patient_get_for_user(user=request.user, patient_id=patient_id)
    form = DicomInspectForm(request.POST, request.FILES)
    summaries = []
    if form.is_valid():
        for uploaded in form.cleaned_data["images"]:
            data = uploaded.read()
            try:
                metadata = read_dicom_metadata(data)
            except ImageDecodeError as error:
                summaries.append(DicomSummary(uploaded.name or "upload", {}, str(error)))
                continue
            if metadata is not None:
                metadata |= dicom_identity_tags(data)
                mismatches = tuple(dicom_header_mismatches(patient=patient, metadata=metadata))
                summaries.append(DicomSummary(uploaded.name or "upload", metadata, mismatches=mismatches))
    suggestion = next((summary for summary in summaries if summary.view_position or summary.modality), None)
    audit_record(action="dicom.inspected", actor=request.user, target=patient, team_id=patient.team_id,
                 detail={"files": len(summaries)})  # fmt: skip
    return render(
        request,
        "diagnostics/_dicom_metadata.html",
        {
            "patient": patient,
            "summaries": summaries,
            "suggestion": suggestion,
            "refuses_mismatches": settings.DICOM_PATIENT_MISMATCH == "refuse",
        },
    )


@dataclass(frozen=True)
class ImageResult:
    """One film of a study as the result page shows it."""

    number: int
    image: Image
    prediction: Prediction | None
    heatmap: HeatmapState | None
    feedback: list[Feedback]
    feedback_form: FeedbackForm | None
    acknowledgements: list[Acknowledgement]  # "seen: no AI result" on a film the AI could not assess

    @property
    def verdict(self) -> Feedback | None:
        return self.feedback[0] if self.feedback else None

    @property
    def is_read(self) -> bool:
        """A reading (feedback) or an acknowledgement is recorded: the film needs nothing more."""
        return bool(self.feedback or self.acknowledgements)


def image_results(
    *, study: Study, feedback_forms: dict[int, FeedbackForm] | None = None, films: list[FilmResult] | None = None
) -> list[ImageResult]:
    results = []
    for film in films if films is not None else study_film_results(study=study):
        prediction = film.prediction
        feedback = list(prediction.feedback.all()) if prediction else []  # prefetched, newest first
        acknowledgements = list(prediction.acknowledgements.all()) if prediction else []
        form = None
        if prediction is not None:
            form = (feedback_forms or {}).get(prediction.pk) or FeedbackForm(auto_id=f"id_p{prediction.pk}_%s")
        results.append(ImageResult(film.number, film.image, prediction, film.heatmap, feedback, form, acknowledgements))
    return results


def _study_context(request: AuthenticatedHttpRequest, study: Study) -> dict[str, object]:
    films = study_film_results(study=study)
    summary = study_summary(status=study.status, results=films)
    results = image_results(study=study, films=films)
    refused = [result for result in results if result.prediction is not None and not result.prediction.analysable]
    return {
        "study": study,
        "patient": study.patient,
        "pending": study.status in PENDING,
        "results": results,
        # What "seen: no AI result" waits for: refused films nobody acknowledged, or a study the AI left
        # without any scored film (failed, or nothing stored); and whether a clinician has seen it.
        "no_ai_result_waiting": study_no_ai_result_waiting(study=study),
        "study_acknowledgement": study_acknowledgement_of_the_study(study=study),
        "summary_acknowledged": any(result.acknowledgements for result in refused),
        # Where '#reading' (the next-unread link) lands: the first film nobody has read yet.
        "reading_number": next((r.number for r in results if r.prediction is not None and not r.is_read), None),
        # The conclusion first: the most suspicious film, how many were assessed, which were refused and why.
        "summary": summary,
        # Wrong patient, outside intended use, age unknown: before the result, on every surface.
        "warnings": study_warnings(study=study),
        # The patient's previous study, offered beside this study's most suspicious (else first) film.
        "previous": study_previous_for_user(user=request.user, study=study),
        "compare_number": summary.top.number if summary.top is not None else 1,
    }


def _comparison_context(request: AuthenticatedHttpRequest, study: Study) -> dict[str, object]:
    """The previous study's film and result beside this study's; its read is audited like any other."""
    comparison = study_comparison_for_user(user=request.user, study=study)
    if comparison is not None:
        audit_read(action="study.viewed", actor=request.user, target=comparison.study,
                   team_id=comparison.study.patient.team_id, detail={"via": "compare", "beside": study.pk})  # fmt: skip
    return {"comparison": comparison, "compare_requested": True}


def _neighbours(request: AuthenticatedHttpRequest, study: Study) -> dict[str, object]:
    """Previous and next study in the worklist order the clinician came from."""
    filters = WorklistFilterForm(request.GET)
    studies = filters.filter(study_list_for_user(user=request.user))
    ids = list(studies.values_list("pk", flat=True)[:STUDY_NAVIGATION_LIMIT])
    position = ids.index(study.pk) if study.pk in ids else None
    querystring = filters.querystring()
    return {
        "next_unread_id": _next_unread(studies, study=study, after=ids[position + 1 :] if position is not None else []),
        "previous_id": ids[position - 1] if position else None,
        "next_id": ids[position + 1] if position is not None and position + 1 < len(ids) else None,
        "position": position + 1 if position is not None else None,
        "worklist_count": len(ids),
        "querystring": querystring,
    }


def _next_unread(studies: QuerySet[Study], *, study: Study, after: list[int]) -> int | None:
    """The reading queue: the first unread study (selectors.study_read_exists) after this one in the
    worklist's order and filters, else the first unread one before it; never this study."""
    unread = list(
        studies.filter(~study_read_exists()).exclude(pk=study.pk).values_list("pk", flat=True)[:STUDY_NAVIGATION_LIMIT]
    )
    following = set(after)
    return next((pk for pk in unread if pk in following), unread[0] if unread else None)


@login_required
@require_GET
def study_detail(request: AuthenticatedHttpRequest, study_id: int) -> HttpResponse:
    study = study_get_for_user(user=request.user, study_id=study_id)
    audit_record(action="study.viewed", actor=request.user, target=study, team_id=study.patient.team_id)
    context = _study_context(request, study) | _neighbours(request, study)
    if request.GET.get("compare") == "previous":  # the compare link without JavaScript: the whole page
        context |= _comparison_context(request, study)
    return render(request, "diagnostics/study_detail.html", context)


@login_required
@require_GET
def study_compare(request: AuthenticatedHttpRequest, study_id: int) -> HttpResponse:
    """The previous study's film beside this study's, for the viewer (htmx)."""
    study = study_get_for_user(user=request.user, study_id=study_id)
    number = request.GET.get("n", "")  # the film it is shown beside, for the link that closes it
    context = {"study": study, "compare_number": number if number.isdigit() else ""}
    return render(request, "diagnostics/_compare_panel.html", context | _comparison_context(request, study))


@login_required
@require_GET
def study_live(request: AuthenticatedHttpRequest, study_id: int) -> HttpResponse:
    """The results region, polled by the page while the AI works; 204 while nothing changed."""
    study = study_get_for_user(user=request.user, study_id=study_id)
    if study.status in PENDING and request.GET.get("seen") == study.status:
        return HttpResponse(status=204)  # nothing shown, nothing read
    audit_read(action="study.viewed", actor=request.user, target=study, team_id=study.patient.team_id,
               detail={"via": "live", "status": study.status})  # fmt: skip
    return render(request, "diagnostics/_study_live.html", _study_context(request, study) | {"announce": True})


@login_required
@require_GET
def study_report(request: AuthenticatedHttpRequest, study_id: int) -> HttpResponse:
    study = study_get_for_user(user=request.user, study_id=study_id)
    pdf = study_report_pdf(user=request.user, study=study)
    response = HttpResponse(pdf, content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="study-{study.pk}-report.pdf"'
    response["Cache-Control"] = "private, no-store"
    return response
