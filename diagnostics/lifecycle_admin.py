"""Admin screens for the model lifecycle: the registry with its promotion gate, and training runs.

These live in the Django admin because only administrators use them; every
button calls the same services as the REST API.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from diagnostics.admin_display import json_table, metric_text
from diagnostics.formatting.manifest_tables import manifest_html, metrics_html
from diagnostics.formatting.numbers import score_percent
from diagnostics.formatting.words import metric_rows
from diagnostics.models import ModelVersion, PromotionGate, TrainingRun, User
from diagnostics.selectors import model_version_active, shadow_comparison
from diagnostics.services.model_registry import (
    model_version_archive,
    model_version_evaluate,
    model_version_gate_check,
    model_version_promote,
    model_version_rollback,
    model_version_set_shadow,
    promotion_gate_get,
)
from diagnostics.services.promotion_gate import (
    evaluation_set_read,
    floor_check,
    gate_floors,
    size_check,
)
from diagnostics.services.training import (
    DATA_SOURCES,
    STAGE_PLANS,
    training_run_cancel,
    training_run_start,
    training_unavailable_reasons,
)
from ml.training.config import ARCHITECTURE_NAMES


def _messages_from(error: ValidationError) -> str:
    return " ".join(error.messages)


def _actor(request: HttpRequest) -> User | None:
    return request.user if isinstance(request.user, User) else None


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("name", "architecture", "status", "validation_auc", "gate_auc", "gate_sensitivity", "created_at")
    list_filter = ("status", "architecture")
    # Read-only: the JSON fields are shown as tables (manifest_tables), never as raw JSON.
    fieldsets = [
        (None, {"fields": [
            "name", "architecture", "status", "threshold_text", "preprocessing_version", "sha256", "artifact_path",
            "training_run", "created_at", "activated_at",
        ]}),
        ("Metrics", {"fields": ["metrics_tables"]}),
        ("Evaluation on the promotion gate's set", {"fields": ["evaluation_tables"]}),
        ("Manifest", {"fields": ["manifest_tables"]}),
    ]  # fmt: skip
    readonly_fields = [f.name for f in ModelVersion._meta.fields] + [
        "metrics_tables", "evaluation_tables", "manifest_tables", "threshold_text",
    ]  # fmt: skip

    @admin.display(description="decision threshold")
    def threshold_text(self, obj: ModelVersion) -> str:
        return score_percent(obj.threshold)

    change_form_template = "admin/diagnostics/modelversion/change_form.html"

    @admin.display(description="metrics")
    def metrics_tables(self, obj: ModelVersion) -> str:
        return metrics_html(obj.metrics, label="Metrics")

    @admin.display(description="gate-set evaluation")
    def evaluation_tables(self, obj: ModelVersion) -> str:
        if not obj.evaluation:
            return "Not evaluated yet: Evaluate on the gate set (below) runs it."
        return metrics_html(obj.evaluation, label="Evaluation on the gate set")

    @admin.display(description="manifest")
    def manifest_tables(self, obj: ModelVersion) -> str:
        return manifest_html(obj.manifest)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # models are registered from artifacts (training runs, `manage.py register_model`)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # predictions keep pointing at the model that made them; archive instead

    @admin.display(description="validation AUC")
    def validation_auc(self, obj: ModelVersion) -> str:
        return metric_text((obj.metrics.get("validation") or {}).get("roc_auc"))

    @admin.display(description="gate-set AUC")
    def gate_auc(self, obj: ModelVersion) -> str:
        return metric_text(obj.evaluation.get("roc_auc"))

    @admin.display(description="gate-set sensitivity")
    def gate_sensitivity(self, obj: ModelVersion) -> str:
        return metric_text(obj.evaluation.get("sensitivity"))

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("<int:pk>/promote/", wrap(self.promote_view), name="diagnostics_modelversion_promote"),
            path("<int:pk>/rollback/", wrap(self.rollback_view), name="diagnostics_modelversion_rollback"),
            path("<int:pk>/lifecycle/<str:action>/", wrap(self.lifecycle_view), name="diagnostics_modelversion_act"),
            *super().get_urls(),
        ]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        model_version = get_object_or_404(ModelVersion, pk=object_id)
        active = model_version_active()
        context = {
            "model_version": model_version,
            "active": active,
            "gate": promotion_gate_get(),
            "floors": gate_floors(),
            "shadow": (
                shadow_comparison(shadow=model_version, active=active)
                if active and model_version.status == ModelVersion.Status.SHADOW
                else None
            ),
        }
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **context})

    def promote_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Shows the gate's side-by-side comparison; promotes on confirmation."""
        model_version = get_object_or_404(ModelVersion, pk=pk)
        change_url = reverse("admin:diagnostics_modelversion_change", args=[pk])
        if request.method == "POST":
            try:
                result = model_version_promote(model_version=model_version, actor=_actor(request))
            except ValidationError as error:
                self.message_user(request, _messages_from(error), messages.ERROR)
            else:
                self.message_user(request, f"{model_version.name} is now active. " + " ".join(result.reasons))
            return HttpResponseRedirect(change_url)
        try:
            result = model_version_gate_check(model_version=model_version)
        except ValidationError as error:
            self.message_user(request, _messages_from(error), messages.ERROR)
            return HttpResponseRedirect(change_url)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Promote {model_version.name}?",
            "model_version": model_version,
            "result": result,
            "rows": _side_by_side(result.candidate, result.active) if result.candidate else [],
            "gate": promotion_gate_get(),
            "floors": gate_floors(),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/diagnostics/modelversion/promote.html", context)

    def rollback_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Says what a rollback does and asks for a reason; rolls back only on that confirmation (POST)."""
        model_version = get_object_or_404(ModelVersion, pk=pk)
        change_url = reverse("admin:diagnostics_modelversion_change", args=[pk])
        form = RollbackForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                model_version_rollback(
                    model_version=model_version, actor=_actor(request), reason=form.cleaned_data["reason"]
                )
            except ValidationError as error:
                self.message_user(request, _messages_from(error), messages.ERROR)
            else:
                self.message_user(request, f"{model_version.name} is active again (rolled back).")
            return HttpResponseRedirect(change_url)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Roll back to {model_version.name}?",
            "model_version": model_version,
            "active": model_version_active(),
            "form": form,
            "measured": _rollback_measures(model_version),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/diagnostics/modelversion/rollback.html", context)

    def lifecycle_view(self, request: HttpRequest, pk: int, action: str) -> HttpResponse:
        model_version = get_object_or_404(ModelVersion, pk=pk)
        change_url = reverse("admin:diagnostics_modelversion_change", args=[pk])
        if request.method != "POST":
            return HttpResponseRedirect(change_url)
        actor = _actor(request)
        try:
            if action == "shadow":
                model_version_set_shadow(model_version=model_version, actor=actor)
                done = "now runs in shadow mode: it predicts on new uploads, clinicians do not see it."
            elif action == "archive":
                model_version_archive(model_version=model_version, actor=actor)
                done = "is archived."
            elif action == "evaluate":
                gate = promotion_gate_get()
                if not gate.evaluation_data_dir:
                    raise ValidationError("Set the promotion gate's evaluation folder first.")
                model_version_evaluate(model_version=model_version, evaluation_dir=gate.evaluation_data_dir)
                done = "was evaluated on the gate's evaluation set."
            else:
                raise ValidationError(f"Unknown action {action!r}.")
        except ValidationError as error:
            self.message_user(request, _messages_from(error), messages.ERROR)
        else:
            self.message_user(request, f"{model_version.name} {done}")
        return HttpResponseRedirect(change_url)


def _side_by_side(candidate: dict[str, Any], active: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each metric in words with the candidate's and the active model's value and 95 % interval."""
    theirs = {row["key"]: row for row in metric_rows(active or {})}
    return [{**row, "active": theirs.get(row["key"])} for row in metric_rows(candidate)]


def _rollback_measures(model_version: ModelVersion) -> dict[str, Any] | None:
    """What is known of the version's performance, for the confirmation page: its last evaluation on the gate
    set (else its manifest's external split) in words, and whether that meets the gate's floors today."""
    evaluation, source = model_version.evaluation, "its last evaluation on the promotion gate's set"
    if not evaluation.get("n"):
        evaluation, source = (model_version.metrics or {}).get("external") or {}, "its manifest (external split)"
    if not evaluation.get("n"):
        return None
    floors = gate_floors()
    return {
        "source": source,
        "n": evaluation["n"],
        "rows": metric_rows(evaluation),
        "checks": [
            floor_check(evaluation, "sensitivity", floors.min_sensitivity),
            floor_check(evaluation, "roc_auc", floors.min_auc),
        ],
    }


class RollbackForm(forms.Form):
    reason = forms.CharField(
        label="Why roll back?",
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Recorded in the audit log with your name, the time and the model this replaces.",
    )


class PromotionGateForm(forms.ModelForm):
    class Meta:
        model = PromotionGate
        fields = ["evaluation_data_dir", "auc_tolerance", "sensitivity_tolerance"]
        labels = {
            "evaluation_data_dir": "Evaluation folder",
            "auc_tolerance": "Tolerance on the ROC AUC (area under the ROC curve) against the active model",
            "sensitivity_tolerance": "Tolerance on the sensitivity against the active model",
        }
        help_texts = {
            "evaluation_data_dir": (
                "Films of a period no model trained on, in the standard layout (NORMAL/, PNEUMONIA/), for example "
                "external/. It must hold at least PROMOTION_MIN_EVALUATION_FILMS films (300 by default) of both "
                "classes."
            ),
        }

    def clean_evaluation_data_dir(self) -> str:
        folder = self.cleaned_data["evaluation_data_dir"].strip()
        if not folder:
            return folder
        try:
            evaluation_set = evaluation_set_read(evaluation_dir=folder)
        except ValidationError:
            raise forms.ValidationError(
                "This folder must exist and contain NORMAL/ and PNEUMONIA/ sub-folders."
            ) from None
        check = size_check(evaluation_set, gate_floors())
        if not check.passed:
            raise forms.ValidationError(check.explanation)
        return folder


@admin.register(PromotionGate)
class PromotionGateAdmin(admin.ModelAdmin):
    form = PromotionGateForm
    list_display = ("evaluation_data_dir", "auc_tolerance_words", "sensitivity_tolerance_words", "updated_at")

    @admin.display(description="ROC AUC tolerance")
    def auc_tolerance_words(self, obj: PromotionGate) -> float:
        return obj.auc_tolerance

    @admin.display(description="sensitivity tolerance")
    def sensitivity_tolerance_words(self, obj: PromotionGate) -> float:
        return obj.sensitivity_tolerance

    def has_add_permission(self, request: HttpRequest) -> bool:
        return not PromotionGate.objects.exists()  # one gate for the whole portal

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: PromotionGate, form: Any, change: bool) -> None:
        from diagnostics.services.audit import audit_record

        super().save_model(request, obj, form, change)
        audit_record(action="model.gate_changed", actor=_actor(request), target=obj, detail=form.cleaned_data)


class TrainingRunForm(forms.Form):
    architecture = forms.ChoiceField(choices=[(name, name) for name in ARCHITECTURE_NAMES], initial="cnn")
    weights = forms.ChoiceField(
        choices=[("none", "none (train from scratch)"), ("imagenet", "ImageNet (local file or download)")]
    )
    stages = forms.ChoiceField(
        choices=[(s, s) for s in STAGE_PLANS],
        help_text="progressive: head only, then the last convolution block, then all layers (SGD, lr 1e-4).",
    )
    epochs = forms.IntegerField(min_value=1, max_value=200, initial=10)
    input_size = forms.IntegerField(min_value=32, max_value=512, initial=128)
    batch_size = forms.IntegerField(min_value=1, max_value=256, initial=32)
    data_source = forms.ChoiceField(
        choices=[(s, s) for s in DATA_SOURCES],
        help_text="dataset+feedback adds images whose label a clinician confirmed or corrected (training only).",
    )
    max_train_images = forms.IntegerField(
        min_value=8, required=False, help_text="Optional budget for a quick run; empty uses every training image."
    )


TRAINING_RUN_JSON = ("config", "progress", "data_summary")


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ("id", "architecture", "status", "trigger", "requested_by", "device", "progress_text", "created_at")
    list_filter = ("status", "architecture", "trigger")
    # The JSON fields as tables (admin_display), not as JSON.
    exclude = TRAINING_RUN_JSON
    readonly_fields = [f.name for f in TrainingRun._meta.fields if f.name not in TRAINING_RUN_JSON] + [
        "config_table", "progress_table", "data_summary_table",
    ]  # fmt: skip
    config_table = json_table("config", "configuration")
    progress_table = json_table("progress", "progress")
    data_summary_table = json_table("data_summary", "data summary")
    change_form_template = "admin/diagnostics/trainingrun/change_form.html"

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.method in ("GET", "HEAD")  # viewing only; cancel has its own button

    @admin.display(description="progress")
    def progress_text(self, obj: TrainingRun) -> str:
        progress = obj.progress or {}
        if "epoch" not in progress:
            return "—"
        return f"{progress.get('stage')}: epoch {progress['epoch']}/{progress.get('epochs_total')}"

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("<int:pk>/cancel/", wrap(self.cancel_view), name="diagnostics_trainingrun_cancel"),
            *super().get_urls(),
        ]

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: Any = None) -> HttpResponse:
        """Choose a configuration, review it on a confirmation page, then start the run.

        Where no run can start (no task queue, no dataset), the form says why and what to configure,
        before anything is chosen, and its button is disabled."""
        if unavailable := training_unavailable_reasons():
            context = {
                **self.admin_site.each_context(request),
                "title": "Start a training run",
                "form": TrainingRunForm(),
                "unavailable": unavailable,
                "opts": self.model._meta,
            }
            return TemplateResponse(request, "admin/diagnostics/trainingrun/start.html", context)
        form = TrainingRunForm(request.POST or None)
        confirming = request.method == "POST" and "confirm" in request.POST
        if request.method == "POST" and form.is_valid():
            choices = dict(form.cleaned_data)
            architecture = choices.pop("architecture")
            if choices["max_train_images"] is None:
                del choices["max_train_images"]
            if confirming:
                try:
                    run = training_run_start(actor=_actor(request), architecture=architecture, config=choices)
                except ValidationError as error:
                    self.message_user(request, _messages_from(error), messages.ERROR)
                else:
                    self.message_user(request, f"Training run {run.pk} is queued for a training worker.")
                    return HttpResponseRedirect(reverse("admin:diagnostics_trainingrun_change", args=[run.pk]))
            else:
                context = {
                    **self.admin_site.each_context(request),
                    "title": "Confirm the training run",
                    "form": form,
                    "architecture": architecture,
                    "choices": choices,
                    "opts": self.model._meta,
                }
                return TemplateResponse(request, "admin/diagnostics/trainingrun/confirm.html", context)
        context = {
            **self.admin_site.each_context(request),
            "title": "Start a training run",
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/diagnostics/trainingrun/start.html", context)

    def cancel_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        run = get_object_or_404(TrainingRun, pk=pk)
        if request.method == "POST":
            try:
                run = training_run_cancel(run=run, actor=_actor(request))
            except ValidationError as error:
                self.message_user(request, _messages_from(error), messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"Training run {run.pk}: {run.get_status_display().lower()}"
                    + (" (stopping at the next progress report)" if run.status == "running" else "."),
                )
        return HttpResponseRedirect(reverse("admin:diagnostics_trainingrun_change", args=[pk]))
