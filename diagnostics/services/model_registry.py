"""Registering model artifacts and choosing the one that serves predictions."""

from __future__ import annotations

from pathlib import Path

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from diagnostics.models import ModelVersion, User
from ml.artifacts import read_manifest, sha256_file

from .audit import audit_record


def model_version_register(*, artifact_dir: Path, actor: User | None = None) -> ModelVersion:
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
    )
    audit_record(action="model.registered", actor=actor, target=model_version, detail={"sha256": sha256})
    return model_version


def model_version_activate(*, model_version: ModelVersion, actor: User | None = None) -> ModelVersion:
    """Make `model_version` the one active model; the previous active one is archived."""
    with transaction.atomic():
        previous = (
            ModelVersion.objects.select_for_update()
            .filter(status=ModelVersion.Status.ACTIVE)
            .exclude(pk=model_version.pk)
            .first()
        )
        if previous is not None:
            previous.status = ModelVersion.Status.ARCHIVED
            previous.save(update_fields=["status"])
        model_version.status = ModelVersion.Status.ACTIVE
        model_version.activated_at = timezone.now()
        model_version.save(update_fields=["status", "activated_at"])
        audit_record(
            action="model.activated",
            actor=actor,
            target=model_version,
            detail={"previous": previous.name if previous else None},
        )
    return model_version
