"""Retraining runs, for admins."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404

from diagnostics.models import (
    TrainingRun,
)


def training_run_list() -> QuerySet[TrainingRun]:
    return TrainingRun.objects.select_related("requested_by").prefetch_related("model_versions")


def training_run_get(*, run_id: int) -> TrainingRun:
    try:
        return training_run_list().get(pk=run_id)
    except (TrainingRun.DoesNotExist, ValueError, TypeError):
        raise Http404("No such training run.") from None
