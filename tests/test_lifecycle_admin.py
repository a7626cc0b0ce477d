"""Admin screens: registry actions behind the gate, and training runs with a confirmation step."""

from __future__ import annotations

import pytest
from django.urls import reverse

from diagnostics.models import ModelVersion, TrainingRun, User

from .conftest import copy_model_artifact, login_client
from .factories import AdminFactory

# The admin's start-a-run form, filled in for a quick run.
QUICK_RUN_CHOICES = {
    "architecture": "cnn",
    "weights": "none",
    "stages": "single",
    "epochs": 3,
    "input_size": 64,
    "batch_size": 16,
    "data_source": "dataset+feedback",
    "max_train_images": "",
}

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_user(team) -> User:
    return AdminFactory(username="root", team=team, is_superuser=True)


@pytest.fixture
def candidate(default_model_dir, tmp_path) -> ModelVersion:
    from diagnostics.services.model_registry import model_version_register

    artifact = copy_model_artifact(default_model_dir, tmp_path / "c", version_suffix="c")
    return model_version_register(artifact_dir=artifact)


def test_clinicians_cannot_open_the_lifecycle_screens(owner, candidate):
    client = login_client(owner)
    for url in (
        reverse("admin:diagnostics_modelversion_change", args=[candidate.pk]),
        reverse("admin:diagnostics_modelversion_promote", args=[candidate.pk]),
        reverse("admin:diagnostics_trainingrun_add"),
    ):
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], url
    response = client.post(reverse("admin:diagnostics_modelversion_act", args=[candidate.pk, "shadow"]))
    assert response.status_code == 302
    candidate.refresh_from_db()
    assert candidate.status == ModelVersion.Status.CANDIDATE


@pytest.mark.slow
def test_promotion_shows_the_comparison_then_promotes_on_confirmation(admin_user, active_model, candidate, gate):
    client = login_client(admin_user)
    url = reverse("admin:diagnostics_modelversion_promote", args=[candidate.pk])
    page = client.get(url).content.decode()
    assert "The gate passes." in page and gate.evaluation_data_dir in page
    assert '<th scope="row">ROC AUC</th>' in page and "roc_auc" not in page  # metric names in words
    candidate.refresh_from_db()
    assert candidate.status == ModelVersion.Status.CANDIDATE  # looking is not promoting
    client.post(url)
    candidate.refresh_from_db()
    assert candidate.status == ModelVersion.Status.ACTIVE


def test_shadow_rollback_and_archive_buttons(admin_user, active_model, candidate):
    client = login_client(admin_user)
    client.post(reverse("admin:diagnostics_modelversion_act", args=[candidate.pk, "shadow"]))
    candidate.refresh_from_db()
    assert candidate.status == ModelVersion.Status.SHADOW
    page = client.get(reverse("admin:diagnostics_modelversion_change", args=[candidate.pk])).content.decode()
    assert "Shadow comparison" in page
    archive_active = reverse("admin:diagnostics_modelversion_act", args=[active_model.pk, "archive"])
    response = client.post(archive_active, follow=True)
    assert "cannot be archived" in response.content.decode()
    client.post(reverse("admin:diagnostics_modelversion_act", args=[candidate.pk, "archive"]))
    candidate.refresh_from_db()
    assert candidate.status == ModelVersion.Status.ARCHIVED


def test_rollback_asks_for_confirmation_and_a_reason_and_is_audited(admin_user, active_model, candidate):
    """Issue 29, item 6: rollback was one click, without confirmation."""
    from django.test import Client

    from diagnostics.models import AuditEvent
    from diagnostics.services.model_registry import model_version_activate

    model_version_activate(model_version=candidate)  # the bundled model is now an earlier, once-active version
    active_model.refresh_from_db()
    client = login_client(admin_user)
    change = client.get(reverse("admin:diagnostics_modelversion_change", args=[active_model.pk])).content.decode()
    url = reverse("admin:diagnostics_modelversion_rollback", args=[active_model.pk])
    assert f'href="{url}">Roll back to this version…</a>' in change and "act-rollback" not in change
    # The old one-click action does nothing now.
    client.post(reverse("admin:diagnostics_modelversion_act", args=[active_model.pk, "rollback"]))
    page = client.get(url).content.decode()
    assert page.count(f"<h1>Roll back to {active_model.name}?</h1>") == 1
    assert f"the active model <strong>{candidate.name}</strong> is archived" in page
    assert "csrfmiddlewaretoken" in page and 'name="reason"' in page
    assert "the gate's floor today: Sensitivity" in page  # met or not, said in words
    external = active_model.metrics["external"]
    assert "its manifest (external split)" in page and f"{external['sensitivity']:.3f}" in page
    # No reason: the page again, nothing changed.
    assert "This field is required." in client.post(url, {"reason": ""}).content.decode()
    # Without the CSRF token: refused.
    forged = Client(enforce_csrf_checks=True)
    forged.force_login(admin_user)
    assert forged.post(url, {"reason": "forged"}).status_code == 403
    candidate.refresh_from_db()
    assert candidate.status == ModelVersion.Status.ACTIVE and not AuditEvent.objects.filter(action="model.rolled_back")

    assert client.post(url, {"reason": "Missed pneumonia on two films"})["Location"] == reverse(
        "admin:diagnostics_modelversion_change", args=[active_model.pk]
    )
    active_model.refresh_from_db()
    candidate.refresh_from_db()
    assert active_model.status == ModelVersion.Status.ACTIVE and candidate.status == ModelVersion.Status.ARCHIVED
    event = AuditEvent.objects.get(action="model.rolled_back")
    assert event.actor == admin_user
    assert event.detail == {"replaced": candidate.name, "reason": "Missed pneumonia on two films"}
    # A GET changes nothing.
    assert client.get(url).status_code == 200 and AuditEvent.objects.filter(action="model.rolled_back").count() == 1


def test_a_training_run_starts_only_after_confirmation_and_can_be_cancelled(admin_user, dataset):
    client = login_client(admin_user)
    choices = dict(QUICK_RUN_CHOICES)
    review = client.post(reverse("admin:diagnostics_trainingrun_add"), choices)
    assert "Confirm the training run" in review.content.decode()
    assert not TrainingRun.objects.exists()
    started = client.post(reverse("admin:diagnostics_trainingrun_add"), {**choices, "confirm": "1"})
    run = TrainingRun.objects.get()
    assert started["Location"] == reverse("admin:diagnostics_trainingrun_change", args=[run.pk])
    assert run.config["epochs"] == 3 and run.config["data_source"] == "dataset+feedback"
    assert run.requested_by == admin_user
    page = client.get(started["Location"]).content.decode()
    assert "waiting for a training worker" in page and "Cancel this run" in page
    client.post(reverse("admin:diagnostics_trainingrun_cancel", args=[run.pk]))
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED


def test_admins_search_the_audit_log_and_cannot_edit_it(admin_user, owner, patient):
    from diagnostics.models import AuditEvent
    from diagnostics.services.audit import audit_record

    audit_record(action="patient.viewed", actor=owner, target=patient, team_id=patient.team_id)
    client = login_client(admin_user)
    listing = client.get(reverse("admin:diagnostics_auditevent_changelist"), {"q": "patient.viewed"})
    assert listing.status_code == 200 and "patient.viewed" in listing.content.decode()
    event = AuditEvent.objects.get(action="patient.viewed")
    change = reverse("admin:diagnostics_auditevent_change", args=[event.pk])
    client.post(change, {"action": "forged"})
    delete = reverse("admin:diagnostics_auditevent_delete", args=[event.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    event.refresh_from_db()
    assert event.action == "patient.viewed"


@pytest.mark.slow
def test_each_lifecycle_screen_names_itself_once(admin_user, active_model, candidate, gate, dataset):
    """The admin prints the page title as its heading; the templates must not add a second one."""
    client = login_client(admin_user)
    start = client.get(reverse("admin:diagnostics_trainingrun_add")).content.decode()
    assert start.count("<h1>Start a training run</h1>") == 1 and start.count("<h1") == 1
    promote = client.get(reverse("admin:diagnostics_modelversion_promote", args=[candidate.pk])).content.decode()
    assert promote.count(f"<h1>Promote {candidate.name}?</h1>") == 1 and promote.count("<h1") == 1
    choices = dict(QUICK_RUN_CHOICES)
    review = client.post(reverse("admin:diagnostics_trainingrun_add"), choices).content.decode()
    assert review.count("<h1>Confirm the training run</h1>") == 1 and review.count("<h1") == 1


@pytest.mark.slow
def test_the_model_version_page_shows_manifest_and_metrics_as_tables_not_json(admin_user, active_model, gate):
    """Issue 17, finding 10: the page dumped the manifest and metrics as raw JSON."""
    from diagnostics.services.model_registry import model_version_evaluate

    model_version_evaluate(model_version=active_model, evaluation_dir=gate.evaluation_data_dir)
    active_model.refresh_from_db()
    client = login_client(admin_user)
    response = client.get(reverse("admin:diagnostics_modelversion_change", args=[active_model.pk]))
    assert response.status_code == 200
    page = response.content.decode()
    validation = active_model.metrics["validation"]
    assert f"films, {validation['n_positive']} with pneumonia</caption>" in page
    auc_low, auc_high = validation["ci95"]["roc_auc"]
    assert (
        f'<th scope="row">ROC AUC</th><td>{validation["roc_auc"]:.4f}</td><td>{auc_low:.4f}–{auc_high:.4f}</td>' in page
    )
    assert "External: films of a new period" in page and "Confusion matrix" in page
    # The gate set's evaluation, and the manifest as key/value rows.
    assert f"{active_model.evaluation['n']} films" in page and gate.evaluation_data_dir in page
    assert f'<th scope="row">preprocessing version</th><td>{active_model.preprocessing_version}</td>' in page
    assert '<th scope="col">mean predicted</th>' in page  # a reliability curve: rows with a column per key
    # No JSON anywhere: neither the manifest nor the metrics nor the evaluation.
    assert "&quot;roc_auc&quot;" not in page and '"roc_auc":' not in page
    assert "&quot;preprocessing_version&quot;" not in page


def test_every_admin_list_and_the_lifecycle_pages_answer(admin_user, active_model, candidate):
    from django.contrib import admin

    from .factories import TrainingRunFactory

    client = login_client(admin_user)
    for model in admin.site._registry:
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        assert client.get(url).status_code == 200, url
    run = TrainingRunFactory(requested_by=admin_user)
    for url in (
        reverse("admin:index"),
        reverse("admin:diagnostics_modelversion_change", args=[candidate.pk]),
        reverse("admin:diagnostics_trainingrun_change", args=[run.pk]),
        reverse("admin:diagnostics_trainingrun_add"),
    ):
        assert client.get(url).status_code == 200, url
    index = client.get(reverse("admin:index")).content.decode()
    assert ">API tokens</a>" in index and ">Webhook deliveries</a>" in index and "Api tokens" not in index


def test_without_a_task_queue_the_training_form_says_why_up_front_and_cannot_start(settings, admin_user):
    """Issue 17, finding 9: in the embedded default the form failed only after two steps."""
    settings.CELERY_TASK_ALWAYS_EAGER = True  # the embedded default: no broker
    settings.PNEUMONIA_DATA_DIR = ""
    client = login_client(admin_user)
    start = client.get(reverse("admin:diagnostics_trainingrun_add")).content.decode()
    assert "Training cannot run on this installation" in start
    assert "no CELERY_BROKER_URL" in start and "python -m ml train" in start and "PNEUMONIA_DATA_DIR" in start
    assert '<fieldset disabled aria-describedby="training-unavailable">' in start
    assert '<input type="submit" value="Review…" disabled>' in start
    # Posting the choices anyway reaches neither the review page nor the (missing) queue.
    answer = client.post(reverse("admin:diagnostics_trainingrun_add"), {**QUICK_RUN_CHOICES, "confirm": "1"})
    page = answer.content.decode()
    assert answer.status_code == 200 and "Training cannot run on this installation" in page
    assert "Confirm the training run" not in page and "training</code> queue" not in page
    assert not TrainingRun.objects.exists()


def test_without_a_dataset_the_form_names_the_setting_and_cannot_start(settings, admin_user):
    settings.PNEUMONIA_DATA_DIR = ""
    start = login_client(admin_user).get(reverse("admin:diagnostics_trainingrun_add")).content.decode()
    assert "No training dataset is configured: set PNEUMONIA_DATA_DIR" in start
    assert "CELERY_BROKER_URL" not in start  # this installation has a task queue
    assert '<input type="submit" value="Review…" disabled>' in start


def test_with_a_queue_and_a_dataset_the_form_starts_and_the_review_names_the_queue(admin_user, dataset):
    client = login_client(admin_user)
    start = client.get(reverse("admin:diagnostics_trainingrun_add")).content.decode()
    assert "Training cannot run" not in start and "disabled" not in start
    review = client.post(reverse("admin:diagnostics_trainingrun_add"), QUICK_RUN_CHOICES).content.decode()
    assert "The run goes to the <code>training</code> queue, where a training worker takes it" in review
