"""Registering model artifacts and choosing the one that serves predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from diagnostics.models import ModelVersion, PromotionGate, TrainingRun, User
from ml.serving.artifacts import read_manifest, sha256_file
from ml.serving.inference import ModelArtifactError

from .audit import audit_record
from .model_artifacts import model_artifact_publish
from .promotion_gate import (
    GATE_BOOTSTRAP_SAMPLES,
    GATE_CI_METHOD,
    EvaluationSet,
    GateResult,
    evaluation_set_read,
    gate_floors,
    novelty_check,
    performance_checks,
    size_check,
    training_film_hashes,
)


def model_version_register(
    *, artifact_dir: Path, actor: User | None = None, training_run: TrainingRun | None = None
) -> ModelVersion:
    """Register a trained artifact (a folder with manifest.json and model.onnx) as a candidate.

    Registering the same artifact twice returns the existing row.
    """
    artifact_dir = Path(artifact_dir).resolve()
    try:
        manifest = read_manifest(artifact_dir)
    except (OSError, ValueError) as error:
        raise ValidationError(f"Cannot read the model manifest in {artifact_dir}: {error}") from None
    onnx_path = artifact_dir / manifest["files"]["onnx"]
    if not onnx_path.is_file():
        raise ValidationError(f"The model file {onnx_path} named by the manifest does not exist.")
    sha256 = sha256_file(onnx_path)
    if manifest.get("onnx_sha256") and manifest["onnx_sha256"] != sha256:
        raise ValidationError(f"{onnx_path} does not match the sha256 recorded in its manifest.")
    # Object storage: the files go to the bucket first, so no row ever names a model a worker cannot fetch.
    model_artifact_publish(artifact_dir=artifact_dir, sha256=sha256)
    name = f"{manifest['name']}@{manifest['version']}"
    existing = ModelVersion.objects.filter(name=name).first()
    if existing is not None:
        if existing.sha256 != sha256:
            raise ValidationError(f"A different model is already registered as {name}.")
        return existing
    model_version = ModelVersion.objects.create(
        name=name,
        architecture=manifest["architecture"],
        artifact_path=str(artifact_dir),
        sha256=sha256,
        preprocessing_version=manifest["preprocessing_version"],
        threshold=float(manifest["threshold"]),
        manifest=manifest,
        metrics=manifest.get("metrics", {}),
        training_run=training_run,
    )
    audit_record(action="model.registered", actor=actor, target=model_version, detail={"sha256": sha256})
    return model_version


Status = ModelVersion.Status


def _take_exclusive_status(model_version: ModelVersion, status: str, *, demote_to: str) -> ModelVersion | None:
    """Give `model_version` a status only one model may hold (active, shadow); the holder is demoted.

    Call inside a transaction: the holder's row is locked until it commits.
    """
    previous = ModelVersion.objects.select_for_update().filter(status=status).exclude(pk=model_version.pk).first()
    if previous is not None:
        previous.status = demote_to
        previous.save(update_fields=["status"])
    model_version.status = status
    return previous


def model_version_activate(*, model_version: ModelVersion, actor: User | None = None) -> ModelVersion:
    """Make `model_version` the one active model; the previous active one is archived."""
    _activate(model_version, actor)
    return model_version


def _activate(model_version: ModelVersion, actor: User | None) -> ModelVersion | None:
    """Activate, audited; returns the model it replaced."""
    with transaction.atomic():
        previous = _take_exclusive_status(model_version, Status.ACTIVE, demote_to=Status.ARCHIVED)
        model_version.activated_at = timezone.now()
        model_version.save(update_fields=["status", "activated_at"])
        audit_record(
            action="model.activated",
            actor=actor,
            target=model_version,
            detail={"previous": previous.name if previous else None},
        )
    return previous


def promotion_gate_get() -> PromotionGate:
    """The single promotion-gate configuration row (created with defaults on first use)."""
    gate = PromotionGate.objects.order_by("pk").first()
    return gate if gate is not None else PromotionGate.objects.create()


def model_version_evaluate(*, model_version: ModelVersion, evaluation_dir: str) -> dict[str, Any]:
    """Run the model (ONNX, as served) on a folder with NORMAL/ and PNEUMONIA/ and store the metrics."""
    from ml.training.evaluation import evaluate_artifact  # scikit-learn: only loaded where evaluation runs

    folder = Path(evaluation_dir)
    if not (folder / "NORMAL").is_dir() or not (folder / "PNEUMONIA").is_dir():
        raise ValidationError(f"The evaluation folder {folder} must contain NORMAL/ and PNEUMONIA/ sub-folders.")
    try:
        summary = evaluate_artifact(
            model_version.artifact_path, folder.parent, folder.name, bootstrap_samples=GATE_BOOTSTRAP_SAMPLES
        )
    except (ModelArtifactError, FileNotFoundError) as error:
        raise ValidationError(f"Cannot evaluate {model_version.name}: {error}") from None
    if summary["onnx_sha256"] != model_version.sha256:
        raise ValidationError(f"The model file of {model_version.name} changed since it was registered.")
    model_version.evaluation = {
        "evaluation_dir": str(folder),
        "evaluated_at": timezone.now().isoformat(),
        "n": summary["n"],
        "n_positive": summary["n_positive"],
        "roc_auc": summary["roc_auc"],
        "sensitivity": summary["sensitivity"],
        "specificity": summary["specificity"],
        "accuracy": summary["accuracy"],
        "precision": summary["precision"],
        "threshold": summary["threshold"],
        "ci95": summary.get("ci95", {}),
        "ci_method": summary.get("ci_method", ""),
    }
    model_version.evaluation = _json_safe(model_version.evaluation)
    model_version.save(update_fields=["evaluation"])
    audit_record(
        action="model.evaluated",
        target=model_version,
        detail={k: model_version.evaluation[k] for k in ("evaluation_dir", "n", "roc_auc", "sensitivity")},
    )
    return model_version.evaluation


def _json_safe(value: Any) -> Any:
    """NaN (an undefined metric, e.g. precision with no positive call) becomes null: valid JSON."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


def _evaluation_on(model_version: ModelVersion, evaluation_set: EvaluationSet) -> dict[str, Any]:
    """The model's evaluation on the gate set: the stored one if it was made on these films with the gate's
    intervals, else a new one."""
    stored = model_version.evaluation or {}
    if (
        stored.get("evaluation_dir") == evaluation_set.folder
        and stored.get("n") == evaluation_set.films
        and stored.get("ci_method") == GATE_CI_METHOD
    ):
        return stored
    return model_version_evaluate(model_version=model_version, evaluation_dir=evaluation_set.folder)


def model_version_gate_check(*, model_version: ModelVersion) -> GateResult:
    """The promotion gate's verdict on a candidate (services.promotion_gate has the rule).

    The evaluation set is checked first, without running a model: a set too small, with one class, or
    holding films the candidate trained on is a refusal, never a pass. Then the candidate and the active
    model are evaluated on it (ONNX, as served) and the candidate must meet the gate's own floors and
    stay within the tolerances of the active model."""
    gate = promotion_gate_get()
    if not gate.evaluation_data_dir:
        raise ValidationError("Set the promotion gate's evaluation folder before promoting a model.")
    floors = gate_floors()
    evaluation_set = evaluation_set_read(evaluation_dir=gate.evaluation_data_dir)
    trained_on = training_film_hashes(artifact_path=model_version.artifact_path, manifest=model_version.manifest)
    checks = [size_check(evaluation_set, floors), novelty_check(evaluation_set, trained_on)]
    if not all(check.passed for check in checks):
        return GateResult(False, checks, evaluation_set, candidate={}, active=None)
    candidate = _evaluation_on(model_version, evaluation_set)
    active_model = ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).exclude(pk=model_version.pk).first()
    active = _evaluation_on(active_model, evaluation_set) if active_model is not None else None
    active_name = active_model.name if active_model is not None else None
    checks += performance_checks(candidate=candidate, active=active, active_name=active_name, gate=gate, floors=floors)
    passed = all(check.passed for check in checks)
    return GateResult(passed, checks, evaluation_set, candidate=candidate, active=active, active_name=active_name)


def model_version_promote(*, model_version: ModelVersion, actor: User | None = None) -> GateResult:
    """Make a candidate (or shadow) model active if it passes the promotion gate; the verdict is audited
    either way, with every check."""
    if model_version.status not in (ModelVersion.Status.CANDIDATE, ModelVersion.Status.SHADOW):
        raise ValidationError(f"{model_version.name} is {model_version.status}; only candidates can be promoted.")
    result = model_version_gate_check(model_version=model_version)
    detail = result.audit_detail()
    if not result.passed:
        audit_record(action="model.promotion_refused", actor=actor, target=model_version, detail=detail)
        raise ValidationError(f"{model_version.name} did not pass the promotion gate: " + " ".join(result.reasons))
    model_version_activate(model_version=model_version, actor=actor)
    audit_record(action="model.promoted", actor=actor, target=model_version, detail=detail)
    return result


def model_version_rollback(*, model_version: ModelVersion, actor: User | None = None, reason: str = "") -> ModelVersion:
    """Make an earlier, once-active version active again (no gate: it already served).

    Audited with the model it replaced and the reason given (the admin's confirmation page asks for one)."""
    if model_version.status == ModelVersion.Status.ACTIVE:
        raise ValidationError(f"{model_version.name} is already active.")
    if model_version.activated_at is None:
        raise ValidationError(f"{model_version.name} was never active; promote it through the gate instead.")
    replaced = _activate(model_version, actor)
    audit_record(
        action="model.rolled_back",
        actor=actor,
        target=model_version,
        detail={"replaced": replaced.name if replaced else None, "reason": reason.strip()},
    )
    return model_version


def model_version_archive(*, model_version: ModelVersion, actor: User | None = None) -> ModelVersion:
    if model_version.status == ModelVersion.Status.ACTIVE:
        raise ValidationError("The active model cannot be archived; activate another model first.")
    previous = model_version.status
    model_version.status = ModelVersion.Status.ARCHIVED
    model_version.save(update_fields=["status"])
    audit_record(action="model.archived", actor=actor, target=model_version, detail={"from": previous})
    return model_version


def model_version_set_shadow(*, model_version: ModelVersion, actor: User | None = None) -> ModelVersion:
    """Run a candidate in shadow mode: it predicts on live uploads, its results are never shown."""
    if model_version.status != ModelVersion.Status.CANDIDATE:
        raise ValidationError(f"{model_version.name} is {model_version.status}; only a candidate can shadow.")
    with transaction.atomic():
        previous = _take_exclusive_status(model_version, Status.SHADOW, demote_to=Status.CANDIDATE)
        model_version.save(update_fields=["status"])
        audit_record(
            action="model.shadow_started",
            actor=actor,
            target=model_version,
            detail={"replaced": previous.name if previous else None},
        )
    return model_version
