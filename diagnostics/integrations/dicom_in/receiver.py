"""The DICOM receiver: a C-STORE SCP (pynetdicom) that PACSes and modalities send films to.

Run by `python manage.py dicom_receiver` (make dicom-receiver, the compose service `dicom-receiver`).
A caller is a registered DicomPeer only when its calling AE title AND its address match (and, with DICOM
TLS on, its certificate chains to DICOM_TLS_CA_FILE); anyone else is rejected at association with an
A-ASSOCIATE-RJ, before any DIMSE message is read. What each association may cost is bounded:

- connections not yet past negotiation: DICOM_MAX_PENDING_CONNECTIONS in total and
  DICOM_MAX_PENDING_PER_ADDRESS per address (closed at accept beyond that), each with DICOM_ACSE_TIMEOUT
  to send its A-ASSOCIATE-RQ and finish its TLS handshake (done in the connection's thread, not the
  accepting one);
- associations: DICOM_MAX_ASSOCIATIONS in total and the peer's max_associations (A-ASSOCIATE-RJ,
  transient, "local limit exceeded");
- a PDU over 1 MiB (we offer 16 KiB) or a dataset over DICOM_MAX_DATASET_BYTES aborts the association
  while it streams; datasets are written to a temporary file as they arrive (never held whole in memory)
  and read once they are complete and within the limit.

Each C-STORE is filed at once by services.dicom_ingest while the sender waits: Success means the film is
in a study whose assessment is queued; anything else is a failure status with a 64-character reason.
"""

from __future__ import annotations

import logging
import ssl
import struct
import threading
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection
from pydicom.dataset import Dataset

from diagnostics.integrations.dicom_in.services import (
    OUT_OF_RESOURCES,
    DicomRefused,
    dicom_ingest,
    pacs_ingest_leftovers,
    pacs_peer_for,
)
from diagnostics.models import DicomPeer
from diagnostics.services.audit import audit_record

logger = logging.getLogger(__name__)

SUCCESS = 0x0000
# The largest PDU read: an A-ASSOCIATE-RQ proposing every storage class fits with room to spare, and we
# offer peers 16 KiB P-DATA PDUs (pynetdicom's default maximum_pdu_size).
MAX_PDU_BYTES = 1024 * 1024
# A-ASSOCIATE-RJ (result, source, diagnostic): PS3.8 9.3.4
REJECT_CALLING_AE = (0x01, 0x01, 0x03)  # permanent, service user, calling AE title not recognised
REJECT_BUSY = (0x02, 0x03, 0x02)  # transient, service provider (presentation), local limit exceeded
REJECTION_AUDIT_WINDOW_S = 60


class StreamRefused(RuntimeError):
    """Raised inside pynetdicom's reading thread: its DUL answers any non-OSError by sending an A-ABORT
    and stopping the association (DULServiceProvider.run_reactor)."""


def _status(code: int, comment: str) -> Dataset:
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment  # at most 64 characters: DicomRefused checks
    return status


def tls_context() -> ssl.SSLContext | None:
    """The server's TLS context when DICOM TLS is configured: TLS 1.2 or later, a client certificate required."""
    if not settings.DICOM_TLS_CERT_FILE:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=settings.DICOM_TLS_CA_FILE)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(settings.DICOM_TLS_CERT_FILE, settings.DICOM_TLS_KEY_FILE)
    return context


class _Connection:
    """One TCP connection and, once negotiated, the peer it is."""

    def __init__(self, assoc: Any, address: str) -> None:
        self.assoc = assoc
        self.address = address
        self.peer: DicomPeer | None = None
        self.dataset_bytes = 0  # of the dataset now streaming
        self.refused = ""  # why the stream is being aborted

    @property
    def finished(self) -> bool:
        return self.assoc.ident is not None and not self.assoc.is_alive()


def _server_class(receiver: DicomReceiver) -> type:
    from pynetdicom.transport import ThreadedAssociationServer

    class Server(ThreadedAssociationServer):
        def get_request(self) -> tuple[Any, Any]:
            # The TLS handshake waits for the connection's own thread (process_request_thread): done here,
            # in the accepting thread, one silent client would stop every other from connecting.
            assert self.socket is not None
            client, address = self.socket.accept()
            if self.ssl_context:
                client = self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
            return client, address

        def verify_request(self, request: Any, client_address: Any) -> bool:
            return receiver._admit_connection(str(client_address[0]))

        def process_request_thread(self, request: Any, client_address: Any) -> None:
            if isinstance(request, ssl.SSLSocket):
                try:
                    request.settimeout(settings.DICOM_ACSE_TIMEOUT)
                    request.do_handshake()
                    request.settimeout(None)
                except (OSError, ValueError) as error:
                    logger.warning("DICOM TLS handshake from %s failed: %s", client_address[0], error)
                    self.shutdown_request(request)
                    return
            super().process_request_thread(request, client_address)

    return Server


class DicomReceiver:
    """A storage SCP for the registered DicomPeers; `start(block=False)` for tests."""

    def __init__(self, *, port: int | None = None, ae_title: str | None = None, host: str | None = None) -> None:
        self.address = (host or settings.DICOM_BIND_ADDRESS, port if port is not None else settings.DICOM_PORT)
        self.ae_title = ae_title or settings.DICOM_AE_TITLE
        self._connections: dict[int, _Connection] = {}
        self._audited_rejections: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()
        self.server: Any = None

    def start(self, *, block: bool = True) -> Any:
        from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        _config.STORE_RECV_CHUNKED_DATASET = True  # datasets stream to a temporary file, not to memory
        filed = pacs_ingest_leftovers()
        if filed:
            logger.info("Filed %s films left in the DICOM inbox by an earlier receiver", filed)
        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(Verification)
        ae.require_called_aet = True
        # Our own limits apply first (_on_requested, _admit_connection): pynetdicom's is only a backstop.
        ae.maximum_associations = settings.DICOM_MAX_ASSOCIATIONS + settings.DICOM_MAX_PENDING_CONNECTIONS
        ae.acse_timeout = settings.DICOM_ACSE_TIMEOUT
        ae.dimse_timeout = settings.DICOM_DIMSE_TIMEOUT
        ae.network_timeout = settings.DICOM_NETWORK_TIMEOUT
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, self._on_open),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_DATA_RECV, self._on_data),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._on_end),
            (evt.EVT_ABORTED, self._on_end),
            (evt.EVT_CONN_CLOSE, self._on_end),
        ]
        self.server = ae.make_server(
            self.address, ssl_context=tls_context(), evt_handlers=handlers, server_class=_server_class(self)
        )
        ae._servers.append(self.server)  # as ae.start_server does: the server's shutdown() removes it
        logger.info("DICOM receiver %s listening on %s:%s%s", self.ae_title, *self.address,
                    " (TLS)" if settings.DICOM_TLS_CERT_FILE else "")  # fmt: skip
        if block:
            self.server.serve_forever()
            return None
        threading.Thread(target=self.server.serve_forever, name="dicom-receiver", daemon=True).start()
        return self.server

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()  # closes its socket too

    # -- connections ---------------------------------------------------------------------------------

    def _prune(self) -> None:
        for key, conn in list(self._connections.items()):
            if conn.finished:
                _discard_partial_dataset(conn.assoc)
                del self._connections[key]

    def _admit_connection(self, address: str) -> bool:
        """At accept: refuse (close) a connection when too many have not negotiated yet."""
        with self._lock:
            self._prune()
            pending = [c for c in self._connections.values() if c.peer is None]
            from_address = sum(1 for c in pending if c.address == address)
        if (
            len(pending) >= settings.DICOM_MAX_PENDING_CONNECTIONS
            or from_address >= settings.DICOM_MAX_PENDING_PER_ADDRESS
        ):
            logger.warning("DICOM connection from %s closed: %s connections waiting to negotiate (%s from it)",
                           address, len(pending), from_address)  # fmt: skip
            return False
        return True

    def _on_open(self, event: Any) -> None:
        address = str(event.address[0])
        conn = _Connection(event.assoc, address)
        with self._lock:
            self._connections[id(event.assoc)] = conn
        socket = event.assoc.dul.socket
        read = socket.recv

        def bounded_recv(nr_bytes: int) -> bytearray:
            if conn.refused:
                _discard_partial_dataset(conn.assoc)
                raise StreamRefused(conn.refused)
            if nr_bytes > MAX_PDU_BYTES:
                raise StreamRefused(f"a PDU of {nr_bytes} bytes (at most {MAX_PDU_BYTES})")
            return read(nr_bytes)

        socket.recv = bounded_recv

    def _connection(self, event: Any) -> _Connection | None:
        with self._lock:
            return self._connections.get(id(event.assoc))

    # -- association ---------------------------------------------------------------------------------

    def _on_requested(self, event: Any) -> None:
        """Negotiation: the calling AE title must be an enabled peer's, calling from its address, within limits."""
        assoc = event.assoc
        conn = self._connection(event)
        calling = str(assoc.requestor.primitive.calling_ae_title).strip()  # requestor.ae_title is set later
        address = str(assoc.requestor.address)
        try:
            peer = pacs_peer_for(ae_title=calling)
            if peer is None or not peer.allows_address(address):
                why = "AE title not registered" if peer is None else "address not allowed for this AE title"
                if self._first_in_window((calling, address, why)):
                    detail = {"calling_ae_title": calling[:16], "address": address, "reason": why}
                    team_id = peer.team_id if peer else None
                    audit_record(action="dicom.association_rejected", team_id=team_id, detail=detail)
                logger.warning("DICOM association from %r at %s rejected: %s", calling, address, why)
                self._reject(assoc, REJECT_CALLING_AE)
                return
            with self._lock:
                self._prune()
                held = [c for c in self._connections.values() if c.peer is not None]
                own = sum(1 for c in held if c.peer is not None and c.peer.pk == peer.pk)
                busy = len(held) >= settings.DICOM_MAX_ASSOCIATIONS or own >= peer.max_associations
                if not busy and conn is not None:
                    conn.peer = peer
            if busy:
                logger.warning(
                    "DICOM association from %s rejected: %s of %s held by it, %s of %s in total",
                    calling, own, peer.max_associations, len(held), settings.DICOM_MAX_ASSOCIATIONS,
                )  # fmt: skip
                self._reject(assoc, REJECT_BUSY)
        finally:
            if conn is None or conn.peer is None:
                connection.close()  # this thread's database connection: the association ends here

    def _first_in_window(self, key: tuple[str, str, str]) -> bool:
        """Whether this rejection is the first of its kind in REJECTION_AUDIT_WINDOW_S: a caller retrying in a loop
        is audited once a minute (and logged every time), not a row per try."""
        now = time.monotonic()
        with self._lock:
            if len(self._audited_rejections) > 10_000:
                self._audited_rejections.clear()
            last = self._audited_rejections.get(key)
            if last is not None and now - last < REJECTION_AUDIT_WINDOW_S:
                return False
            self._audited_rejections[key] = now
            return True

    @staticmethod
    def _reject(assoc: Any, reason: tuple[int, int, int]) -> None:
        from pynetdicom import evt

        assoc.acse.send_reject(*reason)
        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()  # as pynetdicom's own rejections do: waits until the A-ASSOCIATE-RJ is sent

    # -- data ----------------------------------------------------------------------------------------

    def _on_data(self, event: Any) -> None:
        """Every PDU as it arrives (the reading thread): count the bytes of the dataset now streaming."""
        data = event.data
        if data[:1] != b"\x04":  # P-DATA-TF only
            return
        conn = self._connection(event)
        if conn is None:
            return
        offset = 6
        while offset + 6 <= len(data):
            (length,) = struct.unpack(">L", data[offset : offset + 4])
            if data[offset + 5] & 0x01:  # a command fragment: a new message begins
                conn.dataset_bytes = 0
            else:
                conn.dataset_bytes += max(length - 2, 0)
            offset += 4 + length
        limit = settings.DICOM_MAX_DATASET_BYTES
        if conn.dataset_bytes > limit and not conn.refused:
            conn.refused = f"a dataset over {limit} bytes"
            peer = conn.peer
            logger.warning("DICOM dataset from %s over %s bytes: association aborted while it streams",
                           peer.ae_title if peer else conn.address, limit)  # fmt: skip

    def _on_store(self, event: Any) -> int | Dataset:
        conn = self._connection(event)
        peer = conn.peer if conn is not None else None
        if peer is None:  # cannot happen: negotiation admitted only peers
            return _status(0x0124, "Calling AE title not registered.")
        path = Path(event.dataset_path)
        if path.stat().st_size > settings.DICOM_MAX_DATASET_BYTES + 4096:  # the file meta pynetdicom adds
            limit = settings.DICOM_MAX_DATASET_BYTES // 2**20
            return _status(OUT_OF_RESOURCES, f"The film is over the {limit} MB limit.")
        try:
            dicom_ingest(data=path.read_bytes(), user=peer.service_user, peer=peer)
        except DicomRefused as refused:
            return _status(refused.status, refused.comment)
        except OSError as error:
            logger.error("Filing a DICOM film from %s failed: %s", peer.ae_title, error)
            return _status(OUT_OF_RESOURCES, "The portal cannot store films right now.")
        return SUCCESS

    def _on_end(self, event: Any) -> None:
        with self._lock:
            self._prune()
        close_old_connections()
        connection.close()


def _discard_partial_dataset(assoc: Any) -> None:
    """The temporary file of a dataset whose association ended before it was complete."""
    message = getattr(getattr(assoc, "dimse", None), "message", None)
    handle = getattr(message, "_data_set_file", None)
    if message is None or handle is None:
        return
    try:
        handle.close()
        Path(handle.name).unlink(missing_ok=True)
    except OSError:
        pass
    message._data_set_file = None
