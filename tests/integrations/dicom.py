"""What the DICOM receiver does for one association, and the audit trail, for the integrations' tests."""

from __future__ import annotations

from diagnostics.integrations.dicom_in.services import (
    pacs_association_folder,
    pacs_check_instance,
    pacs_inbox_write,
    pacs_ingest_inbox,
)
from diagnostics.models import AuditEvent, DicomPeer, Study


def receive(peer: DicomPeer, *films: bytes) -> list[Study]:
    """What the receiver does for one association: check and keep each film, then file them."""
    folder = pacs_association_folder(peer=peer)
    for data in films:
        pacs_check_instance(peer=peer, data=data)
        pacs_inbox_write(association=folder, data=data)
    return pacs_ingest_inbox(peer=peer, association=folder)


def actions() -> list[str]:
    return list(AuditEvent.objects.order_by("pk").values_list("action", flat=True))
