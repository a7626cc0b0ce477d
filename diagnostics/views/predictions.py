"""A prediction's heatmap and the clinician's reading of it (feedback on a scored film, an acknowledgement
of a film the AI could not assess); shadow predictions are never reachable."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import FileResponse, Http404, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET, require_POST

from diagnostics.forms import FeedbackForm, WorklistFilterForm
from diagnostics.http import AuthenticatedHttpRequest
from diagnostics.selectors import prediction_get_for_user, study_get_for_user
from diagnostics.services.audit import audit_read
from diagnostics.services.feedback import acknowledgement_record, feedback_record, study_acknowledge_no_ai_result

from .htmx import is_htmx
from .studies import image_results


@login_required
@require_GET
@cache_control(private=True, max_age=300)
def heatmap_image(request: AuthenticatedHttpRequest, prediction_id: int) -> FileResponse:
    prediction = prediction_get_for_user(user=request.user, prediction_id=prediction_id)
    if not prediction.heatmap:
        raise Http404("This prediction has no heatmap.")
    audit_read(action="heatmap.viewed", actor=request.user, target=prediction, team_id=request.user.team_id)
    return FileResponse(prediction.heatmap.open("rb"), content_type="image/png")


@login_required
@require_POST
def feedback_submit(request: AuthenticatedHttpRequest, prediction_id: int) -> HttpResponse:
    prediction = prediction_get_for_user(user=request.user, prediction_id=prediction_id)
    form = FeedbackForm(request.POST, auto_id=f"id_p{prediction.pk}_%s")
    recorded = False
    if form.is_valid():
        label = form.cleaned_data["confirmed_label"]
        agrees = label == prediction.label
        try:
            feedback_record(
                user=request.user,
                prediction=prediction,
                agrees=agrees,
                confirmed_label=None if agrees else label,
                subtype=form.cleaned_data["subtype"],
                comment=form.cleaned_data["comment"],
            )
        except ValidationError as error:
            for message in error.messages:
                form.add_error(None, message)
        except PermissionDenied as error:
            form.add_error(None, str(error))
        else:
            recorded = True
    study_url = reverse("study_detail", args=[prediction.image.study_id])
    if not is_htmx(request):
        if recorded:
            messages.success(request, "Thank you: your reading was recorded.")
            return redirect(f"{study_url}#feedback-{prediction.pk}")
        messages.error(request, "Your reading was not recorded: " + " ".join(_errors(form)))
        return redirect(f"{study_url}#feedback-{prediction.pk}")
    study = study_get_for_user(user=request.user, study_id=prediction.image.study_id)
    forms = {} if recorded else {prediction.pk: form}
    [result] = [r for r in image_results(study=study, feedback_forms=forms) if r.prediction == prediction]
    return render(
        request,
        "diagnostics/_feedback.html",
        {"result": result, "recorded": recorded},
        status=200 if recorded else 400,
    )


def _errors(form: FeedbackForm) -> list[str]:
    return [str(message) for errors in form.errors.values() for message in errors]


@login_required
@require_POST
def acknowledgement_submit(request: AuthenticatedHttpRequest, prediction_id: int) -> HttpResponse:
    """'Seen: no AI result' on a film the input gate refused; its study leaves the unread list."""
    prediction = prediction_get_for_user(user=request.user, prediction_id=prediction_id)
    error = ""
    try:
        acknowledgement_record(user=request.user, prediction=prediction, comment=request.POST.get("comment", ""))
    except (ValidationError, PermissionDenied) as failure:
        error = " ".join(failure.messages) if isinstance(failure, ValidationError) else str(failure)
    study_url = reverse("study_detail", args=[prediction.image.study_id])
    if not is_htmx(request):
        if error:
            messages.error(request, "Not recorded: " + error)
        else:
            messages.success(request, "Recorded: you have seen this film; it has no AI result.")
        return redirect(f"{study_url}#acknowledge-{prediction.pk}")
    study = study_get_for_user(user=request.user, study_id=prediction.image.study_id)
    [result] = [r for r in image_results(study=study) if r.prediction == prediction]
    context = {"result": result, "recorded": not error, "error": error}
    return render(request, "diagnostics/_acknowledgement.html", context, status=400 if error else 200)


@login_required
@require_POST
def study_acknowledge(request: AuthenticatedHttpRequest, study_id: int) -> HttpResponse:
    """'Seen: no AI result' on every not-analysable film of a study at once, or on a study whose analysis
    failed or left it without a scored film (the study result's button)."""
    study = study_get_for_user(user=request.user, study_id=study_id)
    try:
        acknowledged = study_acknowledge_no_ai_result(user=request.user, study=study)
    except ValidationError as failure:
        messages.error(request, "Not recorded: " + " ".join(failure.messages))
    else:
        count = sum(1 for acknowledgement in acknowledged if acknowledgement.prediction_id is not None)
        if count:
            messages.success(
                request, f"Recorded: you have seen {count} film{'s' if count != 1 else ''} with no AI result."
            )
        else:
            messages.success(request, "Recorded: you have seen this study; it has no AI result.")
    # Back to the study with the worklist filters it was opened with (the next-unread link keeps them).
    query = WorklistFilterForm(QueryDict(request.POST.get("next_query", ""))).querystring()
    return redirect(reverse("study_detail", args=[study.pk]) + (f"?{query}" if query else "") + "#reading")
