"""Periodic housekeeping run by Celery beat."""

from __future__ import annotations

from celery import shared_task


@shared_task(
    name="worker.tasks.reconcile_stuck_studies",
    acks_late=True,
    soft_time_limit=60,
    time_limit=90,
    ignore_result=True,
)
def reconcile_stuck_studies() -> dict[str, int]:
    from diagnostics.services.reconcile import study_reconcile_stale
    from diagnostics.services.training import training_run_reconcile_stale

    counts = study_reconcile_stale()
    counts["training_runs_failed"] = training_run_reconcile_stale()
    return counts
