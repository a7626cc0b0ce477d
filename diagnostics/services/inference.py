"""Running the active model (and a shadow challenger) on a study's images.

Called by the Celery inference task (or in process in the embedded default).
ONNX models are loaded once per process and kept while they serve, so a
promotion takes effect on the next task without restarting workers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import F, QuerySet
from django.db.models.functions import Greatest
from django.utils import timezone

from diagnostics.models import Image, ModelVersion, Prediction, Study
from diagnostics.selectors import model_version_active
from diagnostics.selectors.warnings import film_intended_use_warning
from ml.serving import variants
from ml.serving.decode import ImageDecodeError
from ml.serving.gate import GateResult
from ml.serving.inference import ModelArtifactError, Predictor

from .audit import audit_record
from .heatmaps import prediction_store_heatmap
from .model_artifacts import model_artifact_local_dir
from .studies import study_enqueue_inference, study_finish, study_refresh_latest_result, study_set_status

logger = logging.getLogger(__name__)

# Threads reading and decoding one micro-batch's files: one per core, at most 4.
DECODE_THREADS = max(1, min(4, os.cpu_count() or 1))
# A connection cut or refused: a retry on a new connection can succeed.
TRANSIENT_DATABASE_ERRORS = (OperationalError, InterfaceError)
NO_ACTIVE_MODEL = "No active AI model is registered. An administrator must register and activate one."


class InferenceFailure(Exception):
    """A failure that retrying cannot fix; the study is failed with this message."""


_predictors_lock = threading.Lock()
# At most the active and the shadow model stay loaded; older ones are dropped on a change.
_predictors: dict[int, Predictor] = {}


def predictor_for(model_version: ModelVersion) -> Predictor:
    """The process-wide predictor for `model_version`, loaded on first use."""
    with _predictors_lock:
        predictor = _predictors.get(model_version.pk)
        if predictor is None:
            threads = settings.INFERENCE_THREADS or None
            predictor = Predictor.from_artifact(
                model_artifact_local_dir(model_version),
                intra_op_threads=threads,
                spin=settings.INFERENCE_SPIN,
                variant=_serving_variant(model_version),
            )
            if predictor.model_sha256 != model_version.sha256:
                raise ModelArtifactError(
                    f"The model file for {model_version.name} changed on disk since it was registered."
                )
            serving = set(
                ModelVersion.objects.filter(
                    status__in=[ModelVersion.Status.ACTIVE, ModelVersion.Status.SHADOW]
                ).values_list("pk", flat=True)
            )
            for stale in [pk for pk in _predictors if pk not in serving]:
                del _predictors[stale]
            _predictors[model_version.pk] = predictor
            runtime = predictor.runtime
            logger.info(
                "Loaded model %s from %s: %s variant on %s (%s)",
                model_version.name,
                model_version.artifact_path,
                runtime.variant,
                runtime.device,
                runtime.provider,
            )
        return predictor


def variant_cache_dir() -> Path:
    """Where the checked variant choices live: $PNEUMONIA_VARIANT_CACHE_DIR, else <VAR_DIR>/variants."""
    return variants.cache_dir_from_env(Path(settings.VAR_DIR) / "variants")


def _serving_variant(model_version: ModelVersion) -> variants.Choice | None:
    """The variant checked for this CPU (ml.serving.variants), or None (fp32) with the reason logged."""
    if variants.serving_mode() == "fp32":
        return None
    try:
        choice, why = variants.read_choice(model_artifact_local_dir(model_version), cache_dir=variant_cache_dir())
    except (OSError, ValueError) as error:
        choice, why = None, str(error)
    if choice is None:
        logger.info("Serving %s as fp32: %s", model_version.name, why)
    return choice


def serving_variants_prepare() -> None:
    """Worker start, before the pool forks: make sure the serving models have a checked variant choice
    for this CPU. Measured (minutes, once per CPU model) only when PNEUMONIA_DATA_DIR holds external/;
    the children then read it in their few seconds of start-up. Without one they serve fp32."""
    if variants.serving_mode() == "fp32":
        logger.info("Serving variants: fp32 only (%s=fp32)", variants.MODE_ENV)
        return
    for model_version in ModelVersion.objects.filter(
        status__in=[ModelVersion.Status.ACTIVE, ModelVersion.Status.SHADOW]
    ):
        try:
            choice, why = variants.ensure_choice(
                model_artifact_local_dir(model_version),
                data_dir=settings.PNEUMONIA_DATA_DIR or None,
                cache_dir=variant_cache_dir(),
                threads=settings.INFERENCE_THREADS or None,
                spin=settings.INFERENCE_SPIN,
            )
        except (OSError, ValueError) as error:
            choice, why = None, str(error)
        if choice is None:
            logger.warning("Model %s will be served as fp32: %s", model_version.name, why)
        else:
            logger.info("Model %s will be served as %s: %s", model_version.name, choice.variant, choice.reason)


def preload_serving_models() -> None:
    """Load the active and shadow models before the first task arrives (worker start-up)."""
    for model_version in ModelVersion.objects.filter(
        status__in=[ModelVersion.Status.ACTIVE, ModelVersion.Status.SHADOW]
    ):
        try:
            predictor_for(model_version)
        except ModelArtifactError:
            logger.exception("Could not preload model %s", model_version.name)


def study_claim_for_inference(*, study_id: int) -> Study | None:
    """Move a queued study to running, counting the attempt. None if someone else has it, or if it
    has had its STUDY_MAX_ATTEMPTS already (then it is failed here, with the reason)."""
    claimed = _studies_claim(Study.objects.filter(pk=study_id))
    if claimed:
        return claimed[0]
    spent = Study.objects.filter(
        pk=study_id, status=Study.Status.QUEUED, attempts__gte=settings.STUDY_MAX_ATTEMPTS
    ).select_related("patient")
    for study in spent:
        study_finish(study=study, status=Study.Status.FAILED, reason=attempts_spent_reason(study.attempts),
                     expected=[Study.Status.QUEUED])  # fmt: skip
    return None


def attempts_spent_reason(attempts: int) -> str:
    return (
        f"The AI assessment did not complete after {attempts} attempts. "
        "The image is kept; ask an administrator to check the inference workers, then re-upload."
    )


def studies_claim_waiting(*, limit: int, exclude: int) -> list[Study]:
    """Claim up to `limit` other queued studies, oldest first, to predict them in the same batch.

    Their own queued messages later find them claimed and do nothing.
    """
    if limit <= 0:
        return []
    return _studies_claim(Study.objects.exclude(pk=exclude).order_by("created_at"), limit=limit)


def _studies_claim(candidates: QuerySet[Study], *, limit: int = 1) -> list[Study]:
    """Claim queued studies among `candidates` that have attempts left: running, one more attempt
    each, a lease. One transaction: a connection cut while claiming spends no study's attempt, and
    rows another worker is claiming are skipped, not waited for."""
    now = timezone.now()
    with transaction.atomic():
        ids = list(
            candidates.filter(status=Study.Status.QUEUED, attempts__lt=settings.STUDY_MAX_ATTEMPTS)
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)[:limit]
        )
        if not ids:
            return []
        Study.objects.filter(pk__in=ids).update(
            status=Study.Status.RUNNING,
            attempts=F("attempts") + 1,
            status_changed_at=now,
            lease_expires_at=now + dt.timedelta(seconds=settings.STUDY_LEASE_SECONDS),
        )
        studies = list(Study.objects.select_related("patient").filter(pk__in=ids).order_by("created_at"))
        for study in studies:
            audit_record(
                action="study.status_changed",
                target=study,
                team_id=study.patient.team_id,
                detail={"from": Study.Status.QUEUED, "to": Study.Status.RUNNING, "attempt": study.attempts},
            )
    return studies


def study_run_inference(*, study_id: int) -> None:
    """Predict a queued study (and others waiting, as one micro-batch) with the active model.

    Idempotent: a study that is not queued is left alone, and an image already
    predicted by a model is not predicted again by it. A shadow model, if any,
    predicts too; its results are stored for comparison and never shown.
    """
    study = study_claim_for_inference(study_id=study_id)
    if study is None:
        logger.info("Study %s is not queued; nothing to do", study_id)
        return
    studies = [study]
    try:
        studies += studies_claim_waiting(limit=settings.INFERENCE_MAX_BATCH - 1, exclude=study.pk)
    except TRANSIENT_DATABASE_ERRORS:
        studies_release_after_database_error(studies=studies)
        raise
    study_batch_predict(studies=studies)


def study_batch_predict(*, studies: list[Study]) -> None:
    """Predict a micro-batch of studies study_run_inference claimed (running) with the active model in one
    call, and finish each: done with its predictions, or failed with a reason."""
    try:
        _batch_predict_and_finish(studies=studies)
    except TRANSIENT_DATABASE_ERRORS:
        # The database went away, not the studies' fault: they go back to the queue with their
        # attempt given back, and the task retries with backoff (worker/queues.py).
        studies_release_after_database_error(studies=studies)
        raise
    except Exception:
        # Possibly transient (storage): give the studies back to the queue so a
        # retry or the reconciler can claim them again, then let the task decide.
        for study in studies:
            study_set_status(
                study=study,
                status=Study.Status.QUEUED,
                reason="Interrupted; will retry.",
                expected=[Study.Status.RUNNING],
            )
        raise


def _batch_predict_and_finish(*, studies: list[Study]) -> None:
    try:
        active = model_version_active()
        if active is None:
            raise InferenceFailure(NO_ACTIVE_MODEL)
        try:
            predictor = predictor_for(active)
        except ModelArtifactError as error:
            raise InferenceFailure(f"The active model {active.name} cannot be loaded: {error}") from None
        failures = images_predict(studies=studies, model_version=active, predictor=predictor)
    except InferenceFailure as failure:
        for study in studies:
            study_finish(study=study, status=Study.Status.FAILED, reason=str(failure), expected=[Study.Status.RUNNING])
        return
    done = [study for study in studies if study.pk not in failures]
    studies_run_shadow(studies=done)
    for study in studies:
        if study.pk in failures:
            study_finish(study=study, status=Study.Status.FAILED, reason=failures[study.pk])
        elif study.images.exclude(predictions__model_version=active).exists():
            # Films arrived while it ran (a PACS sending the rest of a study): predict those too.
            study_set_status(study=study, status=Study.Status.QUEUED, reason="", expected=[Study.Status.RUNNING])
            study_enqueue_inference(study=study)
        else:
            study_refresh_latest_result(study=study)
            study_finish(study=study, status=Study.Status.DONE)


# Waits between tries to give studies back after a database error: about 15 s in all.
RELEASE_BACKOFF_SECONDS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
INTERRUPTED_BY_DATABASE = "Interrupted by a database error; will retry."


def studies_release_after_database_error(*, studies: list[Study]) -> int:
    """Give the still-running studies of an interrupted batch back to the queue and their attempt back:
    the work stopped because the database connection went away, which says nothing about the studies.
    Tried again with backoff while the database stays away; if it never answers, the studies stay
    running until their lease runs out and the reconciler re-queues them (the attempt then stays spent).
    Returns how many were given back."""
    ids = [study.pk for study in studies]
    for pause in RELEASE_BACKOFF_SECONDS:
        time.sleep(pause)
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()  # a cut connection is never usable again
        try:
            with transaction.atomic():
                running = list(
                    Study.objects.select_for_update()
                    .select_related("patient")
                    .filter(pk__in=ids, status=Study.Status.RUNNING)
                )
                Study.objects.filter(pk__in=[s.pk for s in running]).update(
                    status=Study.Status.QUEUED,
                    attempts=Greatest(F("attempts") - 1, 0),
                    failure_reason=INTERRUPTED_BY_DATABASE,
                    status_changed_at=timezone.now(),
                    lease_expires_at=None,
                )
                for study in running:
                    audit_record(
                        action="study.status_changed",
                        target=study,
                        team_id=study.patient.team_id,
                        detail={"from": Study.Status.RUNNING, "to": Study.Status.QUEUED,
                                "reason": INTERRUPTED_BY_DATABASE, "attempt_refunded": True},
                    )  # fmt: skip
        except TRANSIENT_DATABASE_ERRORS as error:
            logger.warning("Giving studies %s back after a database error failed (%s); trying again", ids, error)
            continue
        logger.warning("Studies %s given back to the queue after a database error", [s.pk for s in running])
        return len(running)
    logger.error("Studies %s stay running until their lease runs out: the database did not come back", ids)
    return 0


def studies_run_shadow(*, studies: list[Study]) -> None:
    """Let the shadow model predict the studies too. Its failure never affects the clinician's result."""
    shadow = ModelVersion.objects.filter(status=ModelVersion.Status.SHADOW).first()
    if shadow is None or not studies:
        return
    try:
        predictor = predictor_for(shadow)
        images_predict(studies=studies, model_version=shadow, predictor=predictor, role=Prediction.Role.SHADOW)
    except ModelArtifactError as error:
        logger.warning("Shadow model %s failed: %s", shadow.name, error)
        audit_record(
            action="model.shadow_failed",
            target=shadow,
            detail={"studies": [study.pk for study in studies], "error": str(error)[:500]},
        )


@dataclass
class _DecodedUpload:
    study: Study
    image: Image
    input_sha256: str
    tensor: np.ndarray | None  # None: the gate refused the film
    decode_ms: float
    verdict: GateResult


def studies_renew_lease(*, studies: list[Study]) -> None:
    """The worker is alive and still on these studies: push their leases out again."""
    Study.objects.filter(pk__in=[s.pk for s in studies], status=Study.Status.RUNNING).update(
        lease_expires_at=timezone.now() + dt.timedelta(seconds=settings.STUDY_LEASE_SECONDS)
    )


def images_predict(
    *, studies: list[Study], model_version: ModelVersion, predictor: Predictor, role: str = Prediction.Role.PRIMARY
) -> dict[int, str]:
    """Predict every image of the studies not yet predicted by this model, in batches.

    Returns the reason for each study that cannot be predicted (an unreadable image);
    the other studies' predictions are stored, once per (image, model version).
    """
    todo = [
        (study, image) for study in studies for image in study.images.exclude(predictions__model_version=model_version)
    ]
    decoded: list[_DecodedUpload] = []
    failures: dict[int, str] = {}
    renewed = time.monotonic()
    for (study, image), outcome in zip(todo, _read_and_decode_all(todo, predictor), strict=True):
        if time.monotonic() - renewed > settings.STUDY_LEASE_SECONDS / 3:  # a long batch of big films
            studies_renew_lease(studies=studies)
            renewed = time.monotonic()
        if isinstance(outcome, ImageDecodeError):
            failures[study.pk] = f"Image {image.pk} could not be read: {outcome}"
            continue
        decoded.append(outcome)
    decoded = [item for item in decoded if item.study.pk not in failures]
    scored = [(item, item.tensor) for item in decoded if item.tensor is not None]
    for item in decoded:
        if item.tensor is None:
            _prediction_store(item, model_version, predictor, role, probability=None, model_ms=0.0)
    batch_size = settings.INFERENCE_MAX_BATCH
    for start in range(0, len(scored), batch_size):
        studies_renew_lease(studies=studies)
        chunk = scored[start : start + batch_size]
        started = time.perf_counter()
        # The class activation maps come from the same model call (ml/training/export.py); clinicians see
        # primaries only.
        result = predictor.predict_with_cam(np.stack([tensor for _, tensor in chunk]))
        model_ms = (time.perf_counter() - started) * 1000.0
        for index, (item, _) in enumerate(chunk):
            cam = result.cams[index] if result.cams is not None and role == Prediction.Role.PRIMARY else None
            probability = float(result.probabilities[index])
            subtype = float(result.subtypes[index]) if result.subtypes is not None else None
            _prediction_store(
                item, model_version, predictor, role, probability=probability, model_ms=model_ms, cam=cam,
                subtype_probability=subtype,
            )  # fmt: skip
    return failures


def _prediction_store(
    item: _DecodedUpload,
    model_version: ModelVersion,
    predictor: Predictor,
    role: str,
    *,
    probability: float | None,
    model_ms: float,
    cam: np.ndarray | None = None,
    subtype_probability: float | None = None,
) -> None:
    """One Prediction per (image, model): a score, or the gate's reason and no score at all. A primary
    score of a model with a class activation map (`cam`) gets its heatmap in the same transaction. P(viral)
    from a subtype head is kept only for a film the model calls pneumonia (never for a normal or refused one)."""
    verdict = item.verdict
    label = predictor.label_for(probability) if probability is not None else ""
    if label != Prediction.Label.PNEUMONIA:
        subtype_probability = None
    with transaction.atomic():
        prediction, created = Prediction.objects.get_or_create(
            image=item.image,
            model_version=model_version,
            defaults={
                "role": role,
                "outcome": Prediction.Outcome.SCORED if probability is not None else Prediction.Outcome.NOT_ANALYSABLE,
                "gate_code": verdict.code,
                "gate_reason": verdict.reason,
                "gate_measurements": verdict.measurements,
                "intended_use_warning": _intended_use_warning(item.study, item.image),
                "probability": probability,
                "threshold": predictor.threshold,
                "label": label,
                "subtype_probability": subtype_probability,
                # This image's decoding plus the model call of the batch it was in.
                "latency_ms": item.decode_ms + model_ms,
                "model_sha256": predictor.model_sha256,
                "preprocessing_version": predictor.preprocessing_version,
                "input_sha256": item.input_sha256,
                "execution_provider": predictor.runtime.provider,
                "device": predictor.runtime.device[:120],
                "model_variant": predictor.runtime.variant,
                "variant_sha256": predictor.runtime.variant_sha256,
            },
        )
        if not created or role != Prediction.Role.PRIMARY:
            return
        team_id = item.study.patient.team_id
        if probability is None:
            audit_record(
                action="prediction.not_analysable",
                target=prediction,
                team_id=team_id,
                detail={
                    "study": item.study.pk,
                    "image": item.image.pk,
                    "check": verdict.code,
                    "reason": verdict.reason,
                },
            )
        elif cam is not None:
            prediction_store_heatmap(prediction=prediction, cam=cam, team_id=team_id)


def _intended_use_warning(study: Study, image: Image) -> str:
    """The film's warning when the patient's age, by the record or by the film's own DICOM header, is
    outside the model card's ages, or when neither gives it (selectors.warnings, the study's rule too)."""
    return film_intended_use_warning(
        patient=study.patient, metadata=image.dicom_metadata, uploaded_on=timezone.localdate(study.created_at)
    )


def _read_and_decode(study: Study, image: Image, predictor: Predictor) -> _DecodedUpload | ImageDecodeError:
    """Decode, gate, and (if the gate passes) preprocess one film: the serving path of ml.serving."""
    with image.file.open("rb") as handle:
        data = handle.read()
    started = time.perf_counter()
    try:
        verdict, tensor = predictor.prepare(data, recorded_view=study.view_position)
    except ImageDecodeError as error:
        return error
    decode_ms = (time.perf_counter() - started) * 1000.0
    return _DecodedUpload(study, image, hashlib.sha256(data).hexdigest(), tensor, decode_ms, verdict)


def _read_and_decode_all(
    todo: list[tuple[Study, Image]], predictor: Predictor
) -> list[_DecodedUpload | ImageDecodeError]:
    """Read and decode a micro-batch's files, on several threads when there are several (Pillow
    decodes and resizes without the GIL). Only files are touched here, never the database."""
    threads = min(DECODE_THREADS, len(todo))
    if threads <= 1:
        return [_read_and_decode(study, image, predictor) for study, image in todo]
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode") as pool:
        return list(pool.map(lambda item: _read_and_decode(item[0], item[1], predictor), todo))
