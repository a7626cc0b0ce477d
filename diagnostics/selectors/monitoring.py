"""What a model does in use: its live probabilities over time and how often clinicians overrule it.

Read-only summaries for the administrators' model page. The counts are aggregated in the
database (one query per table), so they stay cheap as predictions accumulate.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Avg, Count, Max, OuterRef, Q, Subquery
from django.db.models.functions import TruncWeek
from django.utils import timezone

from diagnostics.models import Feedback, ModelVersion, Prediction

BINS = 10  # probability histogram: 0–10 %, …, 90–100 %
SCORED = Q(outcome=Prediction.Outcome.SCORED)


class _Rates:
    """Rates shared by a week's summary and the whole model's: from counts the dataclasses hold."""

    predictions: int  # films scored
    not_analysable: int  # films the input gate refused (no score)
    suspected: int
    feedback: int
    overrides: int
    histogram: tuple[int, ...]

    @property
    def not_analysable_rate(self) -> float | None:
        """Share of films refused by the input gate: a rise means new kinds of input (drift)."""
        films = self.predictions + self.not_analysable
        return self.not_analysable / films if films else None

    @property
    def suspected_rate(self) -> float | None:
        return self.suspected / self.predictions if self.predictions else None

    @property
    def override_rate(self) -> float | None:
        return self.overrides / self.feedback if self.feedback else None

    @property
    def histogram_rows(self) -> list[dict[str, Any]]:
        return _histogram_rows(self.histogram)


@dataclass(frozen=True)
class WeekSummary(_Rates):
    week: datetime.date
    predictions: int = 0
    not_analysable: int = 0
    mean_probability: float | None = None
    suspected: int = 0
    histogram: tuple[int, ...] = ()
    feedback: int = 0
    overrides: int = 0


@dataclass(frozen=True)
class ModelMonitoring(_Rates):
    model_version: ModelVersion
    weeks: list[WeekSummary] = field(default_factory=list)
    histogram: tuple[int, ...] = ()
    predictions: int = 0
    not_analysable: int = 0
    suspected: int = 0
    feedback: int = 0
    overrides: int = 0
    validation_prevalence: float | None = None
    # The bacterial-or-viral suggestion (Prediction.subtype) against the clinician's own subtype, over the newest
    # readings of films the AI gave one for where the clinician read pneumonia and named a subtype.
    subtype_readings: int = 0
    subtype_agreements: int = 0

    @property
    def subtype_agreement_rate(self) -> float | None:
        return self.subtype_agreements / self.subtype_readings if self.subtype_readings else None


def _histogram_rows(histogram: tuple[int, ...]) -> list[dict[str, Any]]:
    """Label, count and bar length (share of the largest bin, %) per bin, for tables with bars."""
    largest = max(histogram, default=0) or 1
    return [
        {
            "label": f"{index * 100 // BINS}–{(index + 1) * 100 // BINS} %",
            "count": count,
            "bar": round(100 * count / largest),
        }
        for index, count in enumerate(histogram)
    ]


def _bin_filters() -> dict[str, Any]:
    filters = {}
    for index in range(BINS):
        low, high = index / BINS, (index + 1) / BINS
        below = Q(probability__lte=high) if index == BINS - 1 else Q(probability__lt=high)
        condition = Q(probability__gte=low) & below
        filters[f"bin{index}"] = Count("pk", filter=condition)
    return filters


def model_monitoring(*, model_version: ModelVersion, weeks: int = 12) -> ModelMonitoring:
    """Weekly live-probability distribution and override rate of one model version (all teams)."""
    since = timezone.now() - datetime.timedelta(weeks=weeks)
    predictions = Prediction.objects.filter(model_version=model_version)
    bins = _bin_filters()
    weekly_predictions = {
        row["week"].date(): row
        for row in predictions.filter(created_at__gte=since)
        .annotate(week=TruncWeek("created_at"))
        .values("week")
        .annotate(
            n=Count("pk", filter=SCORED),
            refused=Count("pk", filter=~SCORED),
            mean=Avg("probability"),
            suspected=Count("pk", filter=Q(label=Prediction.Label.PNEUMONIA)),
            **bins,
        )
        .order_by("week")
    }
    totals = predictions.aggregate(
        n=Count("pk", filter=SCORED),
        refused=Count("pk", filter=~SCORED),
        suspected=Count("pk", filter=Q(label=Prediction.Label.PNEUMONIA)),
        **bins,
    )

    # A clinician's verdict is their newest feedback on a prediction; earlier ones are history.
    newest = Feedback.objects.filter(prediction=OuterRef("prediction"), clinician=OuterRef("clinician")).order_by(
        "-created_at", "-pk"
    )
    verdicts = Feedback.objects.filter(prediction__model_version=model_version, pk=Subquery(newest.values("pk")[:1]))
    weekly_feedback = {
        row["week"].date(): row
        for row in verdicts.filter(created_at__gte=since)
        .annotate(week=TruncWeek("created_at"))
        .values("week")
        .annotate(n=Count("pk"), overrides=Count("pk", filter=Q(agrees=False)))
        .order_by("week")
    }
    feedback_totals = verdicts.aggregate(n=Count("pk"), overrides=Count("pk", filter=Q(agrees=False)))
    subtype_totals = _subtype_agreement(verdicts, model_version)

    summaries = []
    for week in sorted(set(weekly_predictions) | set(weekly_feedback)):
        p_row, f_row = weekly_predictions.get(week, {}), weekly_feedback.get(week, {})
        summaries.append(
            WeekSummary(
                week=week,
                predictions=p_row.get("n", 0),
                not_analysable=p_row.get("refused", 0),
                mean_probability=p_row.get("mean"),
                suspected=p_row.get("suspected", 0),
                histogram=tuple(p_row.get(f"bin{i}", 0) for i in range(BINS)),
                feedback=f_row.get("n", 0),
                overrides=f_row.get("overrides", 0),
            )
        )
    validation = (model_version.metrics or {}).get("validation") or {}
    prevalence = None
    if validation.get("n") and validation.get("n_positive") is not None:
        prevalence = validation["n_positive"] / validation["n"]
    return ModelMonitoring(
        model_version=model_version,
        weeks=summaries,
        histogram=tuple(totals[f"bin{i}"] for i in range(BINS)),
        predictions=totals["n"],
        not_analysable=totals["refused"],
        suspected=totals["suspected"],
        feedback=feedback_totals["n"],
        overrides=feedback_totals["overrides"],
        validation_prevalence=prevalence,
        subtype_readings=subtype_totals["n"],
        subtype_agreements=subtype_totals["agreements"],
    )


def _subtype_agreement(verdicts: Any, model_version: ModelVersion) -> dict[str, int]:
    """How many of the clinicians' newest verdicts name a subtype of a pneumonia the AI suggested one for, and
    in how many it is the AI's (viral when P(viral) is at least the model's subtype threshold)."""
    head = model_version.subtype
    if head is None or head["threshold"] is None:
        return {"n": 0, "agreements": 0}
    threshold = head["threshold"]
    readings = verdicts.filter(
        prediction__subtype_probability__isnull=False, confirmed_label=Prediction.Label.PNEUMONIA
    ).exclude(subtype="")
    same = Q(subtype=Feedback.Subtype.VIRAL, prediction__subtype_probability__gte=threshold) | Q(
        subtype=Feedback.Subtype.BACTERIAL, prediction__subtype_probability__lt=threshold
    )
    return readings.aggregate(n=Count("pk"), agreements=Count("pk", filter=same))


@dataclass(frozen=True)
class ServingRuntime:
    """Where some of a model's assessments ran: the device, ONNX Runtime's provider and the model form."""

    device: str
    execution_provider: str
    variant: str
    predictions: int
    last: datetime.datetime


def model_serving_runtimes(*, model_version: ModelVersion) -> list[ServingRuntime]:
    """Every (device, provider, variant) the model's scored predictions record, most recent first."""
    rows = (
        Prediction.objects.filter(SCORED, model_version=model_version)
        .values("device", "execution_provider", "model_variant")
        .annotate(predictions=Count("pk"), last=Max("created_at"))
        .order_by("-last")
    )
    return [
        ServingRuntime(
            device=row["device"] or "not recorded",
            execution_provider=row["execution_provider"] or "not recorded",
            variant=row["model_variant"] or "not recorded",
            predictions=row["predictions"],
            last=row["last"],
        )
        for row in rows
    ]
