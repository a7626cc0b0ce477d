"""The DICOM receiver: a C-STORE SCP (pynetdicom) that PACSes and modalities send films to.

Run by `python manage.py dicom_receiver` (make dicom-receiver, the compose service `dicom-receiver`).
Each association is one thread: its films are checked and written to the inbox while the sender waits
(so a refusal reaches the sender), and accepted as studies when the association ends
(services.py beside this module). Only the work of the services happens here; this module speaks DICOM.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import close_old_connections, connection
from pydicom.dataset import Dataset

from diagnostics.integrations.dicom_in.services import (
    pacs_association_folder,
    pacs_check_instance,
    pacs_inbox_write,
    pacs_ingest_inbox,
    pacs_ingest_leftovers,
    pacs_peer_for,
)
from diagnostics.models import DicomPeer
from diagnostics.services.audit import audit_record

logger = logging.getLogger(__name__)

# C-STORE statuses (PS3.4 B.2.3)
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
NOT_AUTHORISED = 0x0124  # "Refused: not authorized"


def _status(code: int, comment: str) -> Dataset:
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment[:64]  # LO: 64 characters
    return status


class DicomReceiver:
    """A storage SCP for the registered DicomPeers; `start(block=False)` for tests."""

    # All interfaces by default: PACSes connect from other machines (only registered AE titles are heard).
    def __init__(self, *, port: int | None = None, ae_title: str | None = None, host: str = "0.0.0.0") -> None:  # noqa: S104 # nosec B104
        self.address = (host, port if port is not None else settings.DICOM_PORT)
        self.ae_title = ae_title or settings.DICOM_AE_TITLE
        self._associations: dict[int, tuple[DicomPeer, str]] = {}
        self._lock = threading.Lock()
        self.server: Any = None

    def start(self, *, block: bool = True) -> Any:
        from pynetdicom import AE, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        ingested = pacs_ingest_leftovers()
        if ingested:
            logger.info("Filed %s studies left in the DICOM inbox by an earlier run", ingested)
        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(Verification)
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._on_end),
            (evt.EVT_ABORTED, self._on_end),
            (evt.EVT_CONN_CLOSE, self._on_end),
        ]
        logger.info("DICOM receiver %s listening on %s:%s", self.ae_title, *self.address)
        self.server = ae.start_server(self.address, block=block, evt_handlers=handlers)
        return self.server

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()

    def _peer(self, event: Any) -> tuple[DicomPeer, str] | None:
        key = id(event.assoc)
        with self._lock:
            known = self._associations.get(key)
        if known is not None:
            return known
        calling = event.assoc.requestor.ae_title
        peer = pacs_peer_for(ae_title=calling)
        if peer is None:
            return None
        entry = (peer, pacs_association_folder(peer=peer))
        with self._lock:
            self._associations[key] = entry
        return entry

    def _on_store(self, event: Any) -> int | Dataset:
        known = self._peer(event)
        if known is None:
            calling = event.assoc.requestor.ae_title
            audit_record(action="dicom.caller_refused", detail={"calling_ae_title": calling})
            logger.warning("C-STORE from unregistered AE title %r refused", calling)
            return _status(NOT_AUTHORISED, "Calling AE title not registered")
        peer, folder = known
        data = event.encoded_dataset()
        try:
            pacs_check_instance(peer=peer, data=data)
        except ValidationError as error:
            reason = "; ".join(error.messages)
            audit_record(action="dicom.instance_refused", team_id=peer.team_id,
                         detail={"peer": peer.ae_title, "reason": reason[:500]})  # fmt: skip
            return _status(CANNOT_UNDERSTAND, reason)
        try:
            pacs_inbox_write(association=folder, data=data)
        except OSError as error:
            logger.error("DICOM inbox %s not writable: %s", settings.DICOM_INBOX_DIR, error)
            return _status(OUT_OF_RESOURCES, "The portal cannot store films right now")
        return SUCCESS

    def _on_end(self, event: Any) -> None:
        with self._lock:
            known = self._associations.pop(id(event.assoc), None)
        try:
            if known is not None:
                peer, folder = known
                pacs_ingest_inbox(peer=peer, association=folder)
        except Exception:
            # The films stay in the inbox; the next receiver start files them.
            logger.exception("Filing the films of an association from %s failed", known[0].ae_title if known else "?")
        finally:
            close_old_connections()
            connection.close()
