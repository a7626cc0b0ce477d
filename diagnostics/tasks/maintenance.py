"""Periodic housekeeping run by Celery beat."""

from __future__ import annotations

from celery import shared_task

from worker.queues import options


@shared_task(**options("worker.tasks.reconcile_stuck_studies"))
def reconcile_stuck_studies() -> dict[str, int]:
    from diagnostics.services.reconcile import study_reconcile_follow_ups, study_reconcile_stale
    from diagnostics.services.training import training_run_reconcile_stale

    counts = study_reconcile_stale() | study_reconcile_follow_ups()
    counts["training_runs_failed"] = training_run_reconcile_stale()
    return counts


@shared_task(**options("worker.tasks.sweep_orphan_files"))
def sweep_orphan_files() -> dict[str, int]:
    from diagnostics.services.storage_sweep import media_sweep_orphans

    return media_sweep_orphans()
