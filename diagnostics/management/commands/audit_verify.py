"""Walk the audit log's hash chain and name the first row that does not fit (docs/operations.md, "Audit log").

    python manage.py audit_verify

Exit status 0 and the chain's head (row id and hash: keep it somewhere the database's superuser cannot
write, and a later run that no longer reaches it shows rows were removed from the end); exit status 1
and the first row whose content or link is wrong when a row was edited, inserted or deleted behind
the application's back.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from diagnostics.audit_chain import chain_verify


class Command(BaseCommand):
    help = "Verify the audit log's hash chain; name the first row that does not fit (exit status 1)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--database", default="default")

    def handle(self, *args: Any, **options: Any) -> None:
        report = chain_verify(using=options["database"])
        if report.first_break is not None:
            raise CommandError(
                f"Audit log chain broken at row #{report.first_break.event_id}: {report.first_break.reason}. "
                f"Rows up to #{report.head_id} ({report.rows - 1} rows) fit the chain."
                if report.head_id is not None
                else f"Audit log chain broken at row #{report.first_break.event_id}: {report.first_break.reason}."
            )
        if report.head_id is None:
            self.stdout.write("Audit log is empty.")
            return
        self.stdout.write(f"Audit log intact: {report.rows} rows; head row #{report.head_id}, hash {report.head_hash}.")
