"""Back up the portal: the database and every stored file, with a manifest of sha256s (docs/operations.md,
"Backup and restore").

    python manage.py backup --to /backups/portal-$(date +%F)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from diagnostics.services.backup import BackupError, portal_backup


class Command(BaseCommand):
    help = "Back up the database (pg_dump or SQLite's backup API) and the media and model storage into a new folder."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--to", required=True, type=Path, help="a folder that does not exist yet, or is empty")

    def handle(self, *args: Any, to: Path, **options: Any) -> None:
        try:
            report = portal_backup(destination=to)
        except BackupError as error:
            raise CommandError(str(error)) from None
        head = report.audit_head
        self.stdout.write(
            f"Backup written to {report.directory}: {report.rows} rows, {report.files} files "
            f"({report.bytes / 1e6:.1f} MB; {report.referenced} referenced by rows), audit log to row "
            f"#{head.get('id')} ({head.get('hash', '')[:16]}). Keep it with the SECRET_KEY and the environment file."
        )
