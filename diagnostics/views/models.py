"""The administrators' model pages: validation metrics, plots, and behaviour in use (drift, overrides)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET

from diagnostics.formatting.plots import calibration_plot_png, roc_plot_png
from diagnostics.formatting.words import metric_rows
from diagnostics.http import AuthenticatedHttpRequest
from diagnostics.models import ModelVersion
from diagnostics.selectors import model_version_list
from diagnostics.selectors.monitoring import model_monitoring, model_serving_runtimes
from diagnostics.services.model_artifacts import model_artifact_local_dir
from ml.serving.inference import ModelArtifactError

# The calibration and ROC plots are drawn from the manifest's metrics (formatting.plots), titled with the
# model version's name; each kind names the split it shows. A manifest from before ROC points were
# recorded gets no ROC plot (the training run's roc.png is titled with the architecture, not the model),
# and the page says so; a calibration plot without a recorded curve falls back to the run's file.
CALIBRATION_SPLITS = {"calibration": "validation", "calibration_external": "external"}
ROC_SPLITS = {"roc": "validation", "roc_external": "external"}
PLOT_TITLES = {
    "roc": "ROC curve (validation)",
    "calibration": "Calibration (reliability) curve (validation)",
    "roc_external": "ROC curve (external: films of a new period)",
    "calibration_external": "Calibration (reliability) curve (external)",
}


def admin_required(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """Administrators only; a signed-in clinician gets 403 and a page saying so.

    The Models link is shown to administrators only, but the pages are no secret (unlike another
    team's records, which answer 404): a clinician who follows a shared link learns why it is closed.
    """

    @wraps(view)
    def wrapper(request: AuthenticatedHttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_portal_admin:
            return render(request, "diagnostics/models_forbidden.html", status=403)
        return view(request, *args, **kwargs)

    return login_required(wrapper)


def _model_version(model_id: int) -> ModelVersion:
    try:
        return model_version_list().get(pk=model_id)
    except ModelVersion.DoesNotExist:
        raise Http404("No such model version.") from None


@admin_required
@require_GET
def model_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    return render(request, "diagnostics/model_list.html", {"model_versions": model_version_list()})


@admin_required
@require_GET
def model_detail(request: AuthenticatedHttpRequest, model_id: int) -> HttpResponse:
    model_version = _model_version(model_id)
    validation = (model_version.metrics or {}).get("validation") or {}
    external = (model_version.metrics or {}).get("external") or {}
    kinds = [*(model_version.manifest.get("plots") or {})]
    kinds += [kind for kind in (*CALIBRATION_SPLITS, *ROC_SPLITS) if kind not in kinds]
    plots = [
        {"kind": kind, "title": PLOT_TITLES.get(kind, kind.title())}
        for kind in kinds
        if _roc_summary(model_version, kind)
        or (kind not in ROC_SPLITS and (_calibration_summary(model_version, kind) or _plot_path(model_version, kind)))
    ]
    # Splits with metrics but no recorded ROC curve (manifests written before it was recorded).
    roc_missing = [
        PLOT_TITLES[kind]
        for kind, split in ROC_SPLITS.items()
        if (model_version.metrics or {}).get(split) and not _roc_summary(model_version, kind)
    ]
    context = {
        "model_version": model_version,
        "validation": validation,
        "metrics": metric_rows(validation),
        "confusion": validation.get("confusion_matrix"),
        "external": external,
        "external_metrics": metric_rows(external),
        "calibration": model_version.manifest.get("calibration"),
        "plots": plots,
        "roc_missing": roc_missing,
        "monitoring": model_monitoring(model_version=model_version),
        "runtimes": model_serving_runtimes(model_version=model_version),
    }
    return render(request, "diagnostics/model_detail.html", context)


def _plot_path(model_version: ModelVersion, kind: str) -> Path | None:
    """The plot file the manifest names, if it lies inside the artifact folder."""
    name = (model_version.manifest.get("plots") or {}).get(kind)
    if not isinstance(name, str) or not name.endswith(".png"):
        return None
    try:  # object storage: the web host's own copy, fetched once by sha256 (services/model_artifacts.py)
        folder = model_artifact_local_dir(model_version).resolve()
    except (OSError, ModelArtifactError):
        return None
    path = (folder / name).resolve()
    if folder not in path.parents or not path.is_file():
        return None
    return path


def _calibration_summary(model_version: ModelVersion, kind: str) -> dict[str, Any] | None:
    """The evaluation summary a calibration plot is drawn from, when the manifest records its curve."""
    split = CALIBRATION_SPLITS.get(kind)
    summary = (model_version.metrics or {}).get(split) if split else None
    return summary if isinstance(summary, dict) and summary.get("reliability_curve") else None


def _roc_summary(model_version: ModelVersion, kind: str) -> dict[str, Any] | None:
    """The evaluation summary an ROC plot is drawn from, when the manifest records its curve."""
    split = ROC_SPLITS.get(kind)
    summary = (model_version.metrics or {}).get(split) if split else None
    return summary if isinstance(summary, dict) and len(summary.get("roc_curve") or []) >= 2 else None


@admin_required
@require_GET
@cache_control(private=True, max_age=3600)
def model_plot(request: AuthenticatedHttpRequest, model_id: int, kind: str) -> HttpResponseBase:
    model_version = _model_version(model_id)
    if kind in ROC_SPLITS:
        roc = _roc_summary(model_version, kind)
        png = roc_plot_png(summary=roc, title=f"{PLOT_TITLES[kind]}: {model_version.name}") if roc else None
        if png is None:
            raise Http404("This model's manifest records no ROC curve.")
        return HttpResponse(png, content_type="image/png")
    summary = _calibration_summary(model_version, kind)
    if summary is not None:
        png = calibration_plot_png(summary=summary, title=f"{PLOT_TITLES[kind]}: {model_version.name}")
        if png is not None:
            return HttpResponse(png, content_type="image/png")
    path = _plot_path(model_version, kind)
    if path is None:
        raise Http404("No such plot.")
    return FileResponse(path.open("rb"), content_type="image/png")
