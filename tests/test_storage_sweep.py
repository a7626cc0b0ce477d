"""Files with no row (a web worker killed between writing an upload and committing its row) are swept
after a grace period; files of real rows, and files still young, are never touched."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from diagnostics.models import AuditEvent
from diagnostics.services.storage_sweep import media_sweep_orphans
from worker.queues import MAINTENANCE, ROUTES

from .factories import StudyFactory

pytestmark = pytest.mark.django_db


def _age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_only_old_files_without_a_row_are_removed(media_root, patient):
    study = StudyFactory(patient=patient)
    kept = [Path(media_root) / image.file.name for image in study.images.all()]
    orphan = Path(media_root) / "studies" / "killed-mid-upload"
    young = Path(media_root) / "studies" / "upload-still-committing"
    stray_heatmap = Path(media_root) / "heatmaps" / "lost.png"
    for path in (orphan, young, stray_heatmap):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"film")
    for path in (*kept, orphan, stray_heatmap):
        _age(path, 7200)

    counts = media_sweep_orphans(grace_seconds=3600)

    assert counts == {"checked": len(kept) + 2, "removed": 2}
    assert all(path.exists() for path in kept) and young.exists()
    assert not orphan.exists() and not stray_heatmap.exists()
    event = AuditEvent.objects.get(action="storage.orphans_removed")
    assert event.detail["removed"] == 2
    assert media_sweep_orphans(grace_seconds=3600) == {"checked": len(kept), "removed": 0}


def test_the_sweep_runs_hourly_on_the_maintenance_queue(settings):
    assert ROUTES["worker.tasks.sweep_orphan_files"]["queue"] == MAINTENANCE
    assert settings.CELERY_BEAT_SCHEDULE["sweep-orphan-files"]["task"] == "worker.tasks.sweep_orphan_files"
