"""Run the DICOM receiver (C-STORE SCP) that PACSes send films to: docs/integration.md."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Receive chest films over DICOM (C-STORE) from the registered DICOM peers."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", help="interface to listen on (default settings.DICOM_BIND_ADDRESS)")
        parser.add_argument("--port", type=int, help="listen port (default settings.DICOM_PORT)")
        parser.add_argument("--ae-title", help="the portal's AE title (default settings.DICOM_AE_TITLE)")

    def handle(self, *args: Any, **options: Any) -> None:
        from diagnostics.integrations.dicom_in.receiver import DicomReceiver

        DicomReceiver(host=options["host"], port=options["port"], ae_title=options["ae_title"]).start(block=True)
