"""What the DICOM receiver does for each C-STORE (dicom_ingest), and the audit trail, for the integrations' tests."""

from __future__ import annotations

from diagnostics.integrations.dicom_in.services import dicom_ingest
from diagnostics.models import AuditEvent, DicomPeer, Study


def receive(peer: DicomPeer, *films: bytes) -> list[Study]:
    """What the receiver does for the C-STOREs of an association: file each film as it comes. Returns the
    studies that took a new film (a film sent again is acknowledged and filed once), in order."""
    studies: dict[int, Study] = {}
    for data in films:
        ingested = dicom_ingest(data=data, user=peer.service_user, peer=peer)
        if not ingested.duplicate:
            studies.setdefault(ingested.study.pk, ingested.study)
    for study in studies.values():
        study.refresh_from_db()
    return list(studies.values())


def actions() -> list[str]:
    return list(AuditEvent.objects.order_by("pk").values_list("action", flat=True))
