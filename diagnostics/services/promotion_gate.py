"""The promotion gate's rule: what a candidate must show on the gate's evaluation set before it serves.

Every check is reported in words, with the candidate's value, its 95 % interval and what was required, so
the promote page, the REST API's refusal and the audit log state the same verdict:

1. **The evaluation set**: at least ``PROMOTION_MIN_EVALUATION_FILMS`` films with both classes, none of them
   among the films the candidate trained or was validated on (its manifest's data file list). A set of 16
   films gives a sensitivity interval 0.25-1.00: it cannot tell a safe model from an unsafe one.
2. **Floors of the gate's own** (``PROMOTION_MIN_SENSITIVITY``, ``PROMOTION_MIN_AUC``): met by the LOWER end of
   the candidate's 95 % patient-level bootstrap interval, whatever the active model does. The lower end, not
   the point estimate: a candidate passes only if the films leave little doubt that it is at least that good.
3. **No worse than the active model** by more than the admin's tolerances (point estimates, same films).

The checks here are pure functions of the evaluations (ml.training.evaluation summaries) and the settings; running
the models is services.model_registry's job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError

from diagnostics.formatting.words import METRICS
from diagnostics.models import PromotionGate
from ml.serving.artifacts import sha256_file

METRIC_WORDS = dict(METRICS)
# Resamples of the gate's patient-level bootstrap: as many as the manifests' own intervals (ml evaluate).
GATE_BOOTSTRAP_SAMPLES = 1000
GATE_CI_METHOD = f"patient-level percentile bootstrap, {GATE_BOOTSTRAP_SAMPLES} resamples"


@dataclass(frozen=True)
class Floors:
    """The gate's own minimums (settings), the same for every candidate."""

    min_films: int
    min_sensitivity: float
    min_auc: float


def gate_floors() -> Floors:
    return Floors(
        min_films=int(settings.PROMOTION_MIN_EVALUATION_FILMS),
        min_sensitivity=float(settings.PROMOTION_MIN_SENSITIVITY),
        min_auc=float(settings.PROMOTION_MIN_AUC),
    )


@dataclass(frozen=True)
class GateCheck:
    """One line of the verdict: what was checked, the candidate's figure, what was required, met or not."""

    name: str
    passed: bool
    requirement: str
    explanation: str
    value: float | None = None
    interval: tuple[float, float] | None = None


@dataclass(frozen=True)
class EvaluationSet:
    folder: str
    films: int
    with_pneumonia: int
    paths: tuple[Path, ...] = field(repr=False, default=())

    @property
    def normal(self) -> int:
        return self.films - self.with_pneumonia

    def words(self) -> str:
        return f"{self.films} films ({self.with_pneumonia} with pneumonia, {self.normal} normal)"


@dataclass(frozen=True)
class GateResult:
    passed: bool
    checks: list[GateCheck]
    evaluation_set: EvaluationSet
    candidate: dict[str, Any]
    active: dict[str, Any] | None
    active_name: str | None = None

    @property
    def reasons(self) -> list[str]:
        """The failed checks in words; when all pass, one sentence saying so."""
        failed = [check.explanation for check in self.checks if not check.passed]
        return failed or [f"Every check of the promotion gate is met ({len(self.checks)} checks)."]

    def audit_detail(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "reasons": self.reasons,
            "checks": [asdict(check) for check in self.checks],
            "evaluation_set": {
                "folder": self.evaluation_set.folder,
                "films": self.evaluation_set.films,
                "with_pneumonia": self.evaluation_set.with_pneumonia,
            },
            "candidate": self.candidate,
            "active": self.active,
            "active_name": self.active_name,
        }


def evaluation_set_read(*, evaluation_dir: str) -> EvaluationSet:
    """The films of the gate's folder (NORMAL/, PNEUMONIA/), counted without running any model."""
    from ml.serving.films import list_images

    folder = Path(evaluation_dir)
    if not (folder / "NORMAL").is_dir() or not (folder / "PNEUMONIA").is_dir():
        raise ValidationError(f"The evaluation folder {folder} must contain NORMAL/ and PNEUMONIA/ sub-folders.")
    try:
        records = list_images(folder.parent, folder.name)
    except FileNotFoundError:
        records = []
    return EvaluationSet(
        folder=str(folder),
        films=len(records),
        with_pneumonia=sum(1 for record in records if record.label == 1),
        paths=tuple(record.path for record in records),
    )


def size_check(evaluation_set: EvaluationSet, floors: Floors) -> GateCheck:
    requirement = f"at least {floors.min_films} films, with both classes"
    both = evaluation_set.with_pneumonia > 0 and evaluation_set.normal > 0
    if evaluation_set.films >= floors.min_films and both:
        return GateCheck(
            "Evaluation set", True, requirement, f"{evaluation_set.words()}: {requirement}.", value=evaluation_set.films
        )
    lacking = "" if both else " It lacks one class, so sensitivity or specificity cannot be measured."
    return GateCheck(
        "Evaluation set",
        False,
        requirement,
        f"The evaluation set {evaluation_set.folder} has {evaluation_set.words()}; the gate needs {requirement}, "
        "from a period the model never trained on (such as external/), to measure sensitivity and AUC with "
        f"useful intervals.{lacking} Point the promotion gate at a larger set.",
        value=evaluation_set.films,
    )


def training_film_hashes(*, artifact_path: str, manifest: Mapping[str, Any]) -> set[str] | None:
    """sha256 of every film the model trained or was validated on (its data file list), or None if unlisted."""
    name = (manifest.get("data") or {}).get("file_list")
    folder = Path(artifact_path).resolve()
    path = (folder / name).resolve() if isinstance(name, str) and name else None
    if path is None or folder not in path.parents or not path.is_file():
        return None
    hashes = set()
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) == 4:
            hashes.add(parts[3].strip())
    return hashes


def novelty_check(evaluation_set: EvaluationSet, trained_on: set[str] | None) -> GateCheck:
    requirement = "none of its films among the candidate's training or validation films"
    if trained_on is None:
        return GateCheck(
            "Films new to the candidate",
            False,
            requirement,
            "The candidate's manifest names no list of the films it trained on (data.file_list), so the gate "
            "cannot show that the evaluation films are new to it.",
        )
    seen = sum(1 for path in evaluation_set.paths if sha256_file(path) in trained_on)
    if seen:
        return GateCheck(
            "Films new to the candidate",
            False,
            requirement,
            f"{seen} of the {evaluation_set.films} evaluation films are films the candidate trained or was "
            "validated on: they say nothing about new patients.",
            value=seen,
        )
    return GateCheck(
        "Films new to the candidate",
        True,
        requirement,
        f"None of the {evaluation_set.films} evaluation films is one the candidate trained or was validated on.",
        value=0,
    )


def _interval(evaluation: Mapping[str, Any], metric: str) -> tuple[float, float] | None:
    interval = (evaluation.get("ci95") or {}).get(metric)
    if isinstance(interval, Sequence) and len(interval) == 2 and all(isinstance(x, int | float) for x in interval):
        return float(interval[0]), float(interval[1])
    return None


def _figure(value: float | None, interval: tuple[float, float] | None) -> str:
    shown = f"{value:.3f}" if value is not None else "undefined"
    return f"{shown} (95 % interval {interval[0]:.3f}–{interval[1]:.3f})" if interval else shown


def floor_check(evaluation: Mapping[str, Any], metric: str, floor: float) -> GateCheck:
    """The candidate's own floor, met by the lower end of its 95 % interval."""
    words = METRIC_WORDS[metric]
    value, interval = evaluation.get(metric), _interval(evaluation, metric)
    requirement = f"lower end of the 95 % interval at least {floor:.3f}"
    name = f"{words}: the gate's floor"
    if interval is None:
        return GateCheck(
            name,
            False,
            requirement,
            f"{words} {_figure(value, None)} has no 95 % interval on this set, so the floor "
            f"{floor:.3f} cannot be shown to be met.",
            value=value,
        )
    if interval[0] >= floor:
        return GateCheck(
            name,
            True,
            requirement,
            f"{words} {_figure(value, interval)}: the lower end {interval[0]:.3f} meets the floor {floor:.3f}.",
            value=value,
            interval=interval,
        )
    return GateCheck(
        name,
        False,
        requirement,
        f"{words} {_figure(value, interval)}: the lower end {interval[0]:.3f} is under the gate's floor {floor:.3f} "
        "(a floor of its own, whatever the active model does).",
        value=value,
        interval=interval,
    )


def comparison_check(
    candidate: Mapping[str, Any],
    active: Mapping[str, Any] | None,
    active_name: str | None,
    metric: str,
    tolerance: float,
) -> GateCheck:
    """No worse than the active model on the same films by more than the tolerance (point estimates)."""
    words = METRIC_WORDS[metric]
    name = f"{words} against the active model"
    value, interval = candidate.get(metric), _interval(candidate, metric)
    if active is None:
        return GateCheck(
            name,
            True,
            "no active model to compare with",
            "No model is active: nothing to compare with; the floors alone apply.",
            value=value,
            interval=interval,
        )
    theirs = active.get(metric)
    requirement = f"no more than {tolerance} below the active model's" + (
        f" {theirs:.3f}" if theirs is not None else ""
    )
    if value is None or theirs is None:
        return GateCheck(
            name,
            False,
            requirement,
            f"{words} is undefined on the evaluation set (it needs both classes).",
            value=value,
            interval=interval,
        )
    if value < theirs - tolerance:
        return GateCheck(
            name,
            False,
            requirement,
            f"{words} {value:.3f} is worse than the active model's ({active_name}) {theirs:.3f} by more than "
            f"the tolerance {tolerance}.",
            value=value,
            interval=interval,
        )
    return GateCheck(
        name,
        True,
        requirement,
        f"{words} {value:.3f} against the active model's {theirs:.3f}: within the tolerance {tolerance}.",
        value=value,
        interval=interval,
    )


def performance_checks(
    *,
    candidate: Mapping[str, Any],
    active: Mapping[str, Any] | None,
    active_name: str | None,
    gate: PromotionGate,
    floors: Floors,
) -> list[GateCheck]:
    """The floors first (they hold whatever the active model does), then the comparison with it."""
    return [
        floor_check(candidate, "sensitivity", floors.min_sensitivity),
        floor_check(candidate, "roc_auc", floors.min_auc),
        comparison_check(candidate, active, active_name, "sensitivity", gate.sensitivity_tolerance),
        comparison_check(candidate, active, active_name, "roc_auc", gate.auc_tolerance),
    ]
