"""Tables of the clinical domain. Writes go through services/, reads through selectors.py."""

from __future__ import annotations

import ipaddress
import uuid
from pathlib import Path
from typing import Any

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import models, router
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce, Now

from ml.serving import artifacts


class CareTeam(models.Model):
    """An organisation unit; clinicians see only their own team's patients."""

    name = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class User(AbstractUser):
    class Role(models.TextChoices):
        CLINICIAN = "clinician", "Clinician"
        ADMIN = "admin", "Administrator"
        API_CLIENT = "api_client", "API client"

    role = models.CharField(max_length=20, choices=Role.choices, default=Role.CLINICIAN)
    team = models.ForeignKey(CareTeam, null=True, blank=True, on_delete=models.PROTECT, related_name="members")

    class Directory(models.TextChoices):
        LOCAL = "", "Portal account"
        LDAP = "ldap", "LDAP / Active Directory"
        OIDC = "oidc", "OpenID Connect"

    # Where the account comes from: a directory account's role and team follow its groups at each sign-in,
    # and it stops working (sessions, API tokens) once the directory disables it.
    directory = models.CharField(max_length=4, choices=Directory.choices, default=Directory.LOCAL, blank=True)
    # Its name there: the entry's DN (LDAP) or "<issuer> <sub>" (OpenID Connect).
    directory_ref = models.CharField(max_length=500, blank=True, default="", db_index=True)

    @property
    def is_portal_admin(self) -> bool:
        return self.role == self.Role.ADMIN or self.is_superuser


class Patient(models.Model):
    class Sex(models.TextChoices):
        FEMALE = "F", "Female"
        MALE = "M", "Male"
        OTHER = "O", "Other"
        UNKNOWN = "U", "Unknown"

    team = models.ForeignKey(CareTeam, on_delete=models.PROTECT, related_name="patients")
    medical_record_number = models.CharField(max_length=64)
    name = models.CharField(max_length=200)
    # Unknown for some patients a PACS registers (PACSes often send no PatientBirthDate): shown as "age unknown".
    birth_date = models.DateField(null=True, blank=True)
    sex = models.CharField(max_length=1, choices=Sex.choices, default=Sex.UNKNOWN)
    created_by = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "medical_record_number"], name="unique_mrn_per_team"),
        ]
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.medical_record_number})"


# A study's suspicion for the triage order: its current AI probability, -1 while it has none.
TRIAGE_KEY = Coalesce(F("latest_probability"), Value(-1.0))


class PredictionLabel(models.TextChoices):
    """The AI's finding for a film (Prediction.Label) and for a study (Study.latest_label)."""

    NORMAL = "NORMAL", "No pneumonia suspected"
    PNEUMONIA = "PNEUMONIA", "Pneumonia suspected"


class Study(models.Model):
    class Modality(models.TextChoices):
        CR = "CR", "Computed radiography"
        DX = "DX", "Digital radiography"

    class ViewPosition(models.TextChoices):
        PA = "PA", "Posteroanterior"
        AP = "AP", "Anteroposterior"
        LATERAL = "LL", "Lateral"
        UNKNOWN = "", "Not recorded"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="studies")
    accession_number = models.CharField(max_length=64, blank=True)
    modality = models.CharField(max_length=2, choices=Modality.choices, default=Modality.CR)
    body_part = models.CharField(max_length=32, default="CHEST")
    view_position = models.CharField(max_length=2, choices=ViewPosition.choices, blank=True, default="")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    failure_reason = models.TextField(blank=True)
    # How many times a worker has claimed this study; the reconciler gives up after a limit.
    attempts = models.PositiveIntegerField(default=0)
    # While running: the worker that claimed it renews this as it works; once it passes, the worker is
    # presumed dead and the reconciler gives the study back to the queue (services/reconcile.py).
    lease_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    status_changed_at = models.DateTimeField(auto_now_add=True)
    # Optional URL an integrating system gave; notified (HMAC-signed) when the study finishes.
    callback_url = models.URLField(max_length=500, blank=True)
    # The machine credential that created the study: its secret signs the webhook.
    api_token = models.ForeignKey("ApiToken", null=True, blank=True, on_delete=models.SET_NULL, related_name="studies")
    created_by = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # The study's current AI result, kept here (set by services.studies.study_refresh_latest_result
    # when primary predictions are stored) so the worklist sorts and filters 10,000s of studies by an
    # index instead of a per-study subquery: the highest pneumonia probability among the study's images, from the
    # model that predicted them last, and that image's label. Empty while no model has predicted.
    latest_probability = models.FloatField(null=True, blank=True, editable=False)
    latest_label = models.CharField(  # noqa: DJ001 - null means "no AI result", as in the API
        max_length=10, null=True, blank=True, editable=False, choices=PredictionLabel.choices
    )
    # Studies that came from a PACS over DICOM: their DICOM identity, and the peer whose results go back.
    study_instance_uid = models.CharField(max_length=64, blank=True, db_index=True)
    dicom_peer = models.ForeignKey("DicomPeer", null=True, blank=True, on_delete=models.PROTECT, related_name="studies")

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "studies"
        indexes = [
            models.Index(fields=["status", "status_changed_at"], name="study_status_age"),
            # The worklist's default (triage) order: most suspicious first, then newest; studies
            # without a result last (-1, not NULLS LAST, which SQLite cannot index).
            models.Index(TRIAGE_KEY.desc(), F("created_at").desc(), F("id").desc(), name="study_triage_order"),
        ]
        constraints = [
            # Films of one DICOM study from one PACS are one study, however many associations bring them.
            models.UniqueConstraint(
                fields=["dicom_peer", "study_instance_uid"],
                condition=~Q(study_instance_uid=""),
                name="one_study_per_peer_and_uid",
            ),
        ]

    def __str__(self) -> str:
        return f"Study {self.pk} of {self.patient}"


def _image_upload_path(instance: Image, filename: str) -> str:
    # A random name: the original file name may carry patient data and must not be guessable.
    return f"studies/{uuid.uuid4().hex}"


def _derivative_upload_path(instance: Image, filename: str) -> str:
    return f"derivatives/{uuid.uuid4().hex}{Path(filename).suffix}"


def _heatmap_upload_path(instance: Prediction, filename: str) -> str:
    return f"heatmaps/{uuid.uuid4().hex}.png"


class Image(models.Model):
    class Format(models.TextChoices):
        JPEG = "JPEG", "JPEG"
        PNG = "PNG", "PNG"
        DICOM = "DICOM", "DICOM"

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="images")
    file = models.FileField(upload_to=_image_upload_path, max_length=200)
    # Made once when the film is stored (services.images.image_validate_upload), so that views, the PDF
    # and PACS results never decode the original again: an 8-bit JPEG at most DERIVATIVE_SIDE pixels on a
    # side, and for grayscale DICOM a 16-bit one that window/level reads.
    preview = models.FileField(upload_to=_derivative_upload_path, max_length=200, blank=True)
    window_source = models.FileField(upload_to=_derivative_upload_path, max_length=200, blank=True)
    original_filename = models.CharField(max_length=255, blank=True)
    sha256 = models.CharField(max_length=64)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    format = models.CharField(max_length=5, choices=Format.choices)
    size_bytes = models.PositiveBigIntegerField()
    dicom_metadata = models.JSONField(default=dict, blank=True)
    # DICOM files only: the instance's UID. A PACS that sends an instance again gets it acknowledged,
    # not stored twice.
    sop_instance_uid = models.CharField(max_length=64, blank=True)
    uploaded_by = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["sop_instance_uid"], condition=~Q(sop_instance_uid=""), name="one_image_per_sop_instance"
            ),
        ]

    def __str__(self) -> str:
        return f"Image {self.pk} ({self.format} {self.width}×{self.height})"


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        CANDIDATE = "candidate", "Candidate"
        ACTIVE = "active", "Active"
        SHADOW = "shadow", "Shadow (predicts, not shown)"
        ARCHIVED = "archived", "Archived"

    name = models.CharField(max_length=200, unique=True)
    architecture = models.CharField(max_length=50)
    artifact_path = models.CharField(max_length=500)
    sha256 = models.CharField(max_length=64)
    preprocessing_version = models.CharField(max_length=50)
    threshold = models.FloatField()
    manifest = models.JSONField(default=dict)
    metrics = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.CANDIDATE)
    # Result of the last evaluation on the admin's fixed evaluation set, and the gate's verdict.
    evaluation = models.JSONField(default=dict, blank=True)
    training_run = models.ForeignKey(
        "TrainingRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="model_versions"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # The database itself guarantees one active model, and one shadow model, at a time.
            models.UniqueConstraint(fields=["status"], condition=Q(status="active"), name="one_active_model"),
            models.UniqueConstraint(fields=["status"], condition=Q(status="shadow"), name="one_shadow_model"),
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name

    # The score is called a probability only where it is calibrated on films of a new period (the
    # external split): the UPPER end of the 95 % interval of its cross-fitted expected calibration error
    # must be at most this. A point estimate under it is not enough (0.037 [0.02, 0.07] may well be 0.07),
    # and a model with no interval recorded shows an "AI score". The rule's owner is ml.serving.artifacts (the model
    # card states it too).
    PROBABILITY_MAX_ECE = artifacts.PROBABILITY_MAX_ECE

    @property
    def external_ece(self) -> float | None:
        """Cross-fitted ECE on the external split when measured (the fair figure), else the in-sample one."""
        external = (self.metrics or {}).get("external") or {}
        value = external.get("ece_crossfit", external.get("ece"))
        return float(value) if value is not None else None

    @property
    def external_ece_interval(self) -> list[float] | None:
        """95 % interval of the cross-fitted ECE on the external split (ml.training.calibration), if recorded."""
        return _interval(((self.metrics or {}).get("external") or {}).get("ece_crossfit_ci95"))

    @property
    def score_is_probability(self) -> bool:
        return artifacts.score_is_probability(self.metrics)

    @property
    def operating_point(self) -> dict[str, Any] | None:
        """The manifest's operating point, when it records one: the threshold, its rule in words, the target
        sensitivity, the sensitivity and specificity expected there with their 95 % intervals, and how that
        expectation was measured. Read in one place for the Models page and the API; a value of the wrong
        type reads as null rather than as something it is not."""
        point = (self.manifest or {}).get("operating_point")
        if not isinstance(point, dict) or not point:
            return None
        expected = point.get("expected")
        if not isinstance(expected, dict):
            expected = {}
        return {
            "threshold": _number(point.get("threshold")),
            "rule": str(point.get("rule") or ""),
            "target_sensitivity": _number(point.get("target_sensitivity")),
            "expected": {
                "sensitivity": _number(expected.get("sensitivity")),
                "sensitivity_ci95": _interval(expected.get("sensitivity_ci95")),
                "specificity": _number(expected.get("specificity")),
                "specificity_ci95": _interval(expected.get("specificity_ci95")),
            },
            "expected_method": str(point.get("expected_method") or ""),
        }

    @property
    def subtype(self) -> dict[str, Any] | None:
        """The manifest's bacterial-or-viral head (ml/training/subtype.py), when the model has one: its threshold
        on P(viral) and the accuracy expected on new patients (cross-fitted on external/) with its 95 %
        interval. A value of the wrong type reads as null."""
        head = (self.manifest or {}).get("subtype")
        if not isinstance(head, dict) or not head:
            return None
        expected = head.get("expected")
        expected = expected if isinstance(expected, dict) else {}
        metrics = head.get("metrics")
        external = metrics.get("external") if isinstance(metrics, dict) else None
        external = external if isinstance(external, dict) else {}
        return {
            "threshold": _number(head.get("threshold")),
            "expected_accuracy": _number(expected.get("accuracy")),
            "expected_accuracy_ci95": _interval(expected.get("accuracy_ci95")),
            # P(viral) is called a probability under the main score's rule: the upper end of its cross-fitted
            # calibration error's 95 % interval on films of a new period at most PROBABILITY_MAX_ECE.
            "probability_calibrated": _calibrated(_interval(expected.get("ece_ci95"))),
            "expected_sensitivity": _number(expected.get("sensitivity")),
            "expected_specificity": _number(expected.get("specificity")),
            "external_auc": _number(external.get("roc_auc")),
            "expected_method": str(head.get("expected_method") or ""),
        }


def _calibrated(ece_interval: list[float] | None) -> bool:
    return ece_interval is not None and ece_interval[1] <= artifacts.PROBABILITY_MAX_ECE


def _number(value: object) -> float | None:
    """A JSON number as a float; anything else (absent, text, a boolean) as None."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _interval(value: object) -> list[float] | None:
    """A JSON [low, high] pair of numbers, else None."""
    if isinstance(value, list | tuple) and len(value) == 2:
        low, high = _number(value[0]), _number(value[1])
        if low is not None and high is not None:
            return [low, high]
    return None


class Prediction(models.Model):
    Label = PredictionLabel

    class Role(models.TextChoices):
        PRIMARY = "primary", "Primary (shown to clinicians)"
        SHADOW = "shadow", "Shadow (stored for comparison, never shown)"

    image = models.ForeignKey(Image, on_delete=models.PROTECT, related_name="predictions")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="predictions")

    class Outcome(models.TextChoices):
        SCORED = "scored", "Scored by the AI"
        NOT_ANALYSABLE = "not_analysable", "Not analysable"

    role = models.CharField(max_length=7, choices=Role.choices, default=Role.PRIMARY, db_index=True)
    # The input gate (ml.serving.gate) runs before every score: a film it refuses is not analysable and
    # carries no probability and no label, only the reason (the check that failed, in words).
    outcome = models.CharField(max_length=14, choices=Outcome.choices, default=Outcome.SCORED, db_index=True)
    gate_code = models.CharField(max_length=32, blank=True)
    gate_reason = models.TextField(blank=True)
    gate_measurements = models.JSONField(default=dict, blank=True)
    # Set when the patient's age is outside the model card's intended population: shown, not hidden.
    intended_use_warning = models.TextField(blank=True)
    probability = models.FloatField(null=True, blank=True, help_text="Model probability of pneumonia, 0–1.")
    threshold = models.FloatField()
    label = models.CharField(max_length=10, choices=Label.choices, blank=True)
    # A second answer from a model with a subtype head (ml/training/subtype.py): P(viral) rather than bacterial,
    # kept only for a film the model calls pneumonia; the label and its expected accuracy are the model's
    # (ModelVersion.subtype).
    subtype_probability = models.FloatField(
        null=True, blank=True, help_text="AI suggestion: probability that the pneumonia is viral, 0–1."
    )
    latency_ms = models.FloatField()
    # Enough to reproduce the result: exact model bytes, transform, and input bytes.
    model_sha256 = models.CharField(max_length=64)
    preprocessing_version = models.CharField(max_length=50)
    input_sha256 = models.CharField(max_length=64)
    # Where and in which form the model ran (ml.serving.runtime, ml.serving.variants): ONNX Runtime's execution
    # provider, the device, and the variant of the model file (fp32, or an int8/bf16 variant checked against fp32 on
    # external/ on this CPU model) with the sha256 of the file that ran. Empty on rows stored before.
    execution_provider = models.CharField(max_length=40, blank=True)
    device = models.CharField(max_length=120, blank=True)
    model_variant = models.CharField(max_length=16, blank=True)
    variant_sha256 = models.CharField(max_length=64, blank=True)
    # Heatmap (PNG, same random-name storage as images) drawn from the model's class activation map,
    # stored with the prediction (services/heatmaps.py); empty for models whose architecture gives none.
    heatmap = models.FileField(upload_to=_heatmap_upload_path, max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["image", "model_version"], name="one_prediction_per_image_and_model"),
            models.CheckConstraint(
                condition=(
                    Q(outcome="scored", probability__isnull=False) & ~Q(label="")
                    | Q(outcome="not_analysable", probability__isnull=True, label="")
                ),
                name="score_only_when_analysable",
            ),
            models.CheckConstraint(
                condition=Q(subtype_probability__isnull=True) | Q(label="PNEUMONIA"),
                name="subtype_only_for_pneumonia",
            ),
        ]
        ordering = ["-created_at"]
        # The API prediction list, newest first, stops after a page instead of sorting them all.
        indexes = [models.Index(F("created_at").desc(), F("id").desc(), name="prediction_newest_first")]

    def __str__(self) -> str:
        if self.probability is None:
            return f"not analysable: {self.gate_code} ({self.model_version_id})"
        return f"{self.label} p={self.probability:.3f} ({self.model_version_id})"

    @property
    def analysable(self) -> bool:
        return self.outcome == self.Outcome.SCORED

    @property
    def subtype(self) -> dict[str, Any] | None:
        """The AI's bacterial-or-viral suggestion for this film: {"label", "probability" (of viral),
        "threshold", "expected_accuracy", "expected_accuracy_ci95", "probability_calibrated"}, or None
        (no subtype head, a normal or refused film). The one place pages, PDF, API, FHIR and SR read it."""
        if self.subtype_probability is None or self.label != PredictionLabel.PNEUMONIA:
            return None
        head = self.model_version.subtype
        if head is None or head["threshold"] is None:
            return None
        viral = self.subtype_probability >= head["threshold"]
        return {
            "label": "viral" if viral else "bacterial",
            "probability": self.subtype_probability,
            "threshold": head["threshold"],
            "expected_accuracy": head["expected_accuracy"],
            "expected_accuracy_ci95": head["expected_accuracy_ci95"],
            "probability_calibrated": head["probability_calibrated"],
        }


class AuditEventQuerySet(models.QuerySet):
    def bulk_create(self, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError("Audit events are appended one by one (AuditEvent.save links each to the chain).")


class AuditEvent(models.Model):
    """Append-only record of who did what to which record, and every study state change.

    Rows form a hash chain (diagnostics/audit_chain.py; `manage.py audit_verify` walks it): each stores
    the hash of its content and of the row before it. `created_at` is the database's clock.
    """

    created_at = models.DateTimeField(db_default=Now(), db_index=True)
    actor = models.ForeignKey(User, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=64, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    team = models.ForeignKey(CareTeam, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    detail = models.JSONField(default=dict, blank=True)
    # The chain: the previous row's row_hash (unique: two rows never follow the same one) and this row's.
    prev_hash = models.CharField(max_length=64, unique=True, editable=False)
    row_hash = models.CharField(max_length=64, editable=False)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.action} {self.object_type}:{self.object_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise PermissionError("Audit events are append-only.")
        from diagnostics.audit_chain import chain_append

        chain_append(self, using=kwargs.get("using") or router.db_for_write(AuditEvent, instance=self))

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        raise PermissionError("Audit events are append-only.")


class Feedback(models.Model):
    """A clinician's verdict on an AI assessment: agreement or a corrected label. History is kept."""

    class Subtype(models.TextChoices):
        NONE = "", "Not specified"
        BACTERIAL = "bacterial", "Bacterial"
        VIRAL = "viral", "Viral"

    prediction = models.ForeignKey(Prediction, on_delete=models.PROTECT, related_name="feedback")
    clinician = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    agrees = models.BooleanField()
    # The label the clinician holds to be true (equal to the prediction's label when agreeing).
    confirmed_label = models.CharField(max_length=10, choices=Prediction.Label.choices)
    subtype = models.CharField(max_length=10, choices=Subtype.choices, blank=True, default="")
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name_plural = "feedback"

    def __str__(self) -> str:
        return f"{'Agrees' if self.agrees else 'Corrects to'} {self.confirmed_label} on prediction {self.prediction_id}"


class Acknowledgement(models.Model):
    """A clinician has seen a film or study the AI could not assess ("seen: no AI result"): a film the
    input gate refused has no AI label to agree with or correct, and a study whose analysis failed (or
    that ended with no scored film for any reason) may have no assessment at all, so this is how such a
    study leaves the unread list (selectors.study_read_exists counts it beside Feedback). `prediction`
    is the refused film's assessment, or empty for the study as a whole. History is kept, like Feedback."""

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="acknowledgements")
    prediction = models.ForeignKey(
        Prediction, null=True, blank=True, on_delete=models.PROTECT, related_name="acknowledgements"
    )
    clinician = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        if self.prediction_id is None:
            return f"Seen, no AI result: study {self.study_id}"
        return f"Seen, no AI result: prediction {self.prediction_id}"


class TrainingRun(models.Model):
    """An admin-triggered or scheduled retraining, with live progress and its log."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    requested_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    trigger = models.CharField(max_length=20, default="admin")  # admin | api | schedule
    architecture = models.CharField(max_length=50)
    # Full training configuration (stages, epochs, input size, data source, feedback use).
    config = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    # Latest progress reported by the trainer: epoch, total_epochs, stage, metrics, eta_seconds.
    progress = models.JSONField(default=dict, blank=True)
    log = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    device = models.CharField(max_length=100, blank=True)
    error = models.TextField(blank=True)
    # Training data actually used: dataset folder, file counts and digest, feedback labels included.
    data_summary = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Training run {self.pk} ({self.architecture}, {self.status})"


class PromotionGate(models.Model):
    """The admin's rule for promoting a candidate: a fixed evaluation set and tolerances (one row)."""

    evaluation_data_dir = models.CharField(
        max_length=500,
        blank=True,
        help_text="Folder in the standard layout (NORMAL/, PNEUMONIA/) never used for training.",
    )
    auc_tolerance = models.FloatField(default=0.005)
    sensitivity_tolerance = models.FloatField(default=0.01)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Promotion gate on {self.evaluation_data_dir or '(no evaluation set)'}"


class ApiToken(models.Model):
    """A machine client's credential: named, scoped to a team, revocable. Only a hash is stored."""

    name = models.CharField(max_length=100)
    user = models.ForeignKey(User, on_delete=models.PROTECT, related_name="api_tokens")
    team = models.ForeignKey(CareTeam, on_delete=models.PROTECT, related_name="api_tokens")
    prefix = models.CharField(max_length=12, db_index=True)
    key_sha256 = models.CharField(max_length=64, unique=True)
    # Signs webhook deliveries for this client (HMAC-SHA256).
    webhook_secret = models.CharField(max_length=64)
    created_by = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class IdempotencyRecord(models.Model):
    """Remembers a study-creating POST by its Idempotency-Key, so a retried request returns the same study."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=200)
    request_sha256 = models.CharField(max_length=64)
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="one_idempotency_key_per_user")]

    def __str__(self) -> str:
        return f"{self.key} → study {self.study_id}"


class WebhookDelivery(models.Model):
    """One notification to an integrating system that a study finished, with its delivery attempts."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="webhook_deliveries")
    url = models.URLField(max_length=500)
    event = models.CharField(max_length=50)
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_response_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.event} for study {self.study_id} → {self.url} ({self.status})"


def ip_networks_parse(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """A DicomPeer's allowed_networks as networks (a bare address is a /32 or /128); ValueError names the bad one."""
    networks = []
    for entry in text.replace(",", "\n").split():
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network (10.1.2.3, 10.1.0.0/16, fd00::/8).") from None
    return networks


def validate_ip_networks(text: str) -> None:
    try:
        ip_networks_parse(text)
    except ValueError as error:
        raise ValidationError(str(error)) from None


class DicomPeer(models.Model):
    """A PACS or modality that sends films over DICOM, and where the AI results go back.

    It is its calling AE title AND the addresses it may call from: the receiver rejects an association
    (A-ASSOCIATE-RJ) whose AE title is not an enabled peer's or whose address is outside that peer's
    `allowed_networks`, and one beyond the peer's `max_associations` (integrations/dicom_in/receiver.py).
    Its films belong to its care team and are stored as its service account. Results (a Structured Report
    and a Secondary Capture per study) are sent to `host`:`port` as `results_ae_title` when a port is set.
    """

    ae_title = models.CharField(max_length=16, unique=True, help_text="The AE title it calls the portal as.")
    allowed_networks = models.TextField(
        blank=True,
        validators=[validate_ip_networks],
        help_text="Addresses or networks it may call from, one per line or comma-separated (10.1.2.3, "
        "10.1.0.0/16, fd00::/8). Empty: it cannot call (every association from it is rejected).",
    )
    max_associations = models.PositiveSmallIntegerField(
        default=4, help_text="Associations it may hold open at once; one more is rejected (transient)."
    )
    team = models.ForeignKey(CareTeam, on_delete=models.PROTECT, related_name="dicom_peers")
    service_user = models.ForeignKey(
        User, on_delete=models.PROTECT, related_name="+", help_text="Studies it sends are created as this account."
    )
    host = models.CharField(max_length=255, blank=True, help_text="Where results are sent back (C-STORE).")
    port = models.PositiveIntegerField(null=True, blank=True)
    results_ae_title = models.CharField(max_length=16, blank=True, help_text="The peer's own AE title.")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "DICOM peer"

    def __str__(self) -> str:
        return f"{self.ae_title} ({self.team})"

    @property
    def sends_results(self) -> bool:
        return bool(self.enabled and self.host and self.port and self.results_ae_title)

    def allows_address(self, address: str) -> bool:
        """Whether an association from `address` may be this peer (IPv4-mapped IPv6 compared as IPv4)."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in ip_networks_parse(self.allowed_networks))


class PacsDelivery(models.Model):
    """One DICOM object (the study's SR or a film's Secondary Capture) sent back to the PACS."""

    class Kind(models.TextChoices):
        STRUCTURED_REPORT = "sr", "Structured Report"
        SECONDARY_CAPTURE = "sc", "Secondary Capture"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="pacs_deliveries")
    peer = models.ForeignKey(DicomPeer, on_delete=models.PROTECT, related_name="deliveries")
    kind = models.CharField(max_length=2, choices=Kind.choices)
    sop_instance_uid = models.CharField(max_length=64)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "PACS deliveries"

    def __str__(self) -> str:
        return f"{self.get_kind_display()} of study {self.study_id} → {self.peer.ae_title} ({self.status})"
