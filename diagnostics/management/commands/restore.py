"""Restore a backup made by `manage.py backup` into an empty database and storage (docs/operations.md,
"Backup and restore").

    DATABASE_URL=postgres://portal@db/portal_new python manage.py restore --from /backups/portal-2026-12-07

The backup is checked against its manifest before anything is written; a target that is not empty is
refused unless --force. Afterwards every file is read back, every table's rows counted and the audit
log's hash chain walked to the head the backup recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from diagnostics.services.backup import BackupError, portal_restore


class Command(BaseCommand):
    help = "Restore a backup into the configured (empty) database and storage, then verify it."
    # The target database is empty until the restore: no check may query it first.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--from", dest="source", required=True, type=Path, help="the backup folder")
        parser.add_argument(
            "--force",
            action="store_true",
            help="restore over a database and storage that are not empty (tables dropped, same-named files replaced)",
        )

    def handle(self, *args: Any, source: Path, force: bool, **options: Any) -> None:
        try:
            report = portal_restore(source=source, force=force)
        except BackupError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"Restored {source}: " + "; ".join(report.notes) + ".")
