"""The model registry: promotion gate on a fixed evaluation set, rollback, archive, shadow."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from diagnostics.models import AuditEvent, ModelVersion
from diagnostics.services.model_registry import (
    model_version_activate,
    model_version_archive,
    model_version_promote,
    model_version_register,
    model_version_rollback,
    model_version_set_shadow,
)
from ml.serving.artifacts import sha256_file

from .conftest import copy_model_artifact

pytestmark = pytest.mark.django_db


def register_copy(default_model_dir: Path, tmp_path: Path, suffix: str, **manifest_changes) -> ModelVersion:
    artifact = copy_model_artifact(default_model_dir, tmp_path / suffix, version_suffix=suffix)
    if manifest_changes:
        manifest = json.loads((artifact / "manifest.json").read_text())
        manifest.update(manifest_changes)
        (artifact / "manifest.json").write_text(json.dumps(manifest))
    return model_version_register(artifact_dir=artifact)


def test_promotion_needs_a_configured_evaluation_set(active_model, default_model_dir, tmp_path):
    candidate = register_copy(default_model_dir, tmp_path, "c")
    with pytest.raises(ValidationError, match="evaluation folder"):
        model_version_promote(model_version=candidate)
    assert ModelVersion.objects.get(status=ModelVersion.Status.ACTIVE) == active_model


@pytest.mark.slow
def test_an_equally_good_candidate_passes_the_gate_and_becomes_active(
    gate, active_model, default_model_dir, tmp_path, owner
):
    candidate = register_copy(default_model_dir, tmp_path, "c")
    result = model_version_promote(model_version=candidate, actor=owner)
    assert result.passed
    assert result.candidate["n"] == 12 and result.candidate["evaluation_dir"] == gate.evaluation_data_dir
    assert result.candidate["roc_auc"] == pytest.approx(result.active["roc_auc"])
    assert list(ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE)) == [candidate]
    active_model.refresh_from_db()
    assert active_model.status == ModelVersion.Status.ARCHIVED
    event = AuditEvent.objects.get(action="model.promoted")
    assert event.actor == owner and event.detail["passed"] is True


@pytest.mark.slow
def test_a_less_sensitive_candidate_is_refused_with_the_comparison(gate, default_model_dir, tmp_path):
    # Same model bytes, so the same AUC; the thresholds make sensitivity certain whatever the
    # probabilities: below every probability calls all films pneumonia (1.0), above none (0.0).
    active_model = model_version_activate(model_version=register_copy(default_model_dir, tmp_path, "a", threshold=-1))
    candidate = register_copy(default_model_dir, tmp_path, "c", threshold=1.5)
    with pytest.raises(ValidationError, match="Sensitivity 0.000 is worse than the active model's .* 1.000"):
        model_version_promote(model_version=candidate)
    assert ModelVersion.objects.get(status=ModelVersion.Status.ACTIVE) == active_model
    refused = AuditEvent.objects.get(action="model.promotion_refused")
    assert refused.detail["candidate"]["sensitivity"] == 0.0
    assert refused.detail["active"]["sensitivity"] == 1.0
    failed = [check["name"] for check in refused.detail["checks"] if not check["passed"]]
    assert failed == ["Sensitivity against the active model"]


@pytest.mark.slow
def test_rollback_reactivates_an_earlier_version_only(gate, active_model, default_model_dir, tmp_path, owner):
    candidate = register_copy(default_model_dir, tmp_path, "c")
    model_version_promote(model_version=candidate)
    active_model.refresh_from_db()
    model_version_rollback(model_version=active_model, actor=owner, reason="  Missed pneumonia on the ward  ")
    assert ModelVersion.objects.get(status=ModelVersion.Status.ACTIVE) == active_model
    rolled_back = AuditEvent.objects.get(action="model.rolled_back")
    assert rolled_back.actor == owner and rolled_back.object_id == str(active_model.pk)
    assert rolled_back.detail == {"replaced": candidate.name, "reason": "Missed pneumonia on the ward"}
    never_active = register_copy(default_model_dir, tmp_path, "n")
    with pytest.raises(ValidationError, match="never active"):
        model_version_rollback(model_version=never_active)


def test_the_active_model_cannot_be_archived(active_model):
    with pytest.raises(ValidationError, match="cannot be archived"):
        model_version_archive(model_version=active_model)


def test_one_shadow_at_a_time(active_model, default_model_dir, tmp_path):
    first = register_copy(default_model_dir, tmp_path, "s1")
    second = register_copy(default_model_dir, tmp_path, "s2")
    model_version_set_shadow(model_version=first)
    model_version_set_shadow(model_version=second)
    first.refresh_from_db()
    assert first.status == ModelVersion.Status.CANDIDATE
    assert list(ModelVersion.objects.filter(status=ModelVersion.Status.SHADOW)) == [second]


def test_activate_is_atomic_with_the_database_constraint(active_model, default_model_dir, tmp_path):
    from django.db import IntegrityError, transaction

    other = register_copy(default_model_dir, tmp_path, "o")
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.filter(pk=other.pk).update(status=ModelVersion.Status.ACTIVE)
    model_version_activate(model_version=other)
    assert list(ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE)) == [other]


def test_setup_demo_replaces_the_bundled_model_once_a_code_update_has_replaced_its_files(
    default_model_dir, tmp_path, settings
):
    """`make run` on an existing var/: the bundled model's files changed under its registered row (re-exported
    with its heatmap output), so that row can no longer load; the new bundled model is activated instead."""
    from django.core.management import call_command

    settings.VAR_DIR = tmp_path / "var"
    bundled = copy_model_artifact(default_model_dir, tmp_path / "bundled", version_suffix="old")
    settings.DEFAULT_MODEL_DIR = bundled
    call_command("setup_demo", stdout=io.StringIO())
    old = ModelVersion.objects.get(status=ModelVersion.Status.ACTIVE)

    call_command("setup_demo", stdout=io.StringIO())
    assert ModelVersion.objects.get(status=ModelVersion.Status.ACTIVE) == old  # nothing changed: left alone

    with open(bundled / "model.onnx", "ab") as handle:
        handle.write(b"\0")  # new bytes, as a re-export gives
    manifest = json.loads((bundled / "manifest.json").read_text())
    manifest["version"] = manifest["version"].replace("-old", "-new")
    manifest["onnx_sha256"] = sha256_file(bundled / "model.onnx")
    (bundled / "manifest.json").write_text(json.dumps(manifest))
    call_command("setup_demo", stdout=io.StringIO())
    active = ModelVersion.objects.get(status=ModelVersion.Status.ACTIVE)
    assert active.name.endswith("-new") and active.sha256 == manifest["onnx_sha256"]
    old.refresh_from_db()
    assert old.status == ModelVersion.Status.ARCHIVED
