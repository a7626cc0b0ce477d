"""The DICOM receiver on the network (diagnostics/integrations/dicom_in/receiver.py), with real senders:
pynetdicom, and dcmtk's echoscu/storescu where installed. Who may associate (AE title AND address, DICOM
TLS), the limits on associations and pending connections, C-STORE answers that say why, and a dataset over
the limit refused while it streams without the receiver's memory growing by its size."""

from __future__ import annotations

import io
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from django.db import connection
from pydicom.uid import generate_uid

from diagnostics.integrations.dicom_in.receiver import DicomReceiver
from diagnostics.models import AuditEvent, DicomPeer, Study

from ...conftest import require_tool
from ...images import cr_film_bytes
from ..test_pacs_orthanc import free_port

# Real associations over TCP (and TLS) with a receiver thread and dcmtk senders: the slow tier (test_dicom_in.py
# files the same films in-process in the quick loop).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
PORTAL_AE = "PNEUMOPORTAL"
CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
VERIFICATION = "1.2.840.10008.1.1"


@pytest.fixture
def receiver(settings) -> Iterator[int]:
    port = free_port()
    server = DicomReceiver(port=port, ae_title=PORTAL_AE, host="127.0.0.1")
    server.start(block=False)
    try:
        yield port
    finally:
        server.stop()


def associate(port: int, *, ae_title: str = "WARDPACS", source: str = "127.0.0.1", tls_args=None,  # noqa: ANN001, ANN201
              explicit: bool = False):  # fmt: skip
    from pydicom.uid import ExplicitVRLittleEndian
    from pynetdicom import AE

    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.network_timeout = 10
    for context in (CR_STORAGE, CT_STORAGE, VERIFICATION):
        ae.add_requested_context(context, *([ExplicitVRLittleEndian] if explicit else []))
    return ae.associate("127.0.0.1", port, ae_title=PORTAL_AE, bind_address=(source, 0), tls_args=tls_args)


def rejection(assoc) -> tuple[int, int, int]:  # noqa: ANN001
    primitive = assoc.acceptor.primitive
    return (primitive.result, primitive.result_source, primitive.diagnostic)


def dataset(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def test_an_unknown_ae_title_is_rejected_at_association_and_audited(peer, receiver):
    for _try in range(3):  # a caller retrying in a loop: rejected every time, audited once a minute
        assoc = associate(receiver, ae_title="STRANGER")
        assert assoc.is_rejected and not assoc.is_established
        assert rejection(assoc) == (0x01, 0x01, 0x03), "permanent, calling AE title not recognised"
    event = AuditEvent.objects.get(action="dicom.association_rejected")
    assert event.detail == {"calling_ae_title": "STRANGER", "address": "127.0.0.1", "reason": "AE title not registered"}


def test_a_registered_ae_title_from_another_address_is_rejected_at_association(peer, receiver):
    """Issue 31: a spoofed 'PACSA' from another machine filed studies into that PACS's team."""
    DicomPeer.objects.filter(pk=peer.pk).update(allowed_networks="127.0.0.2")
    spoofed = associate(receiver, source="127.0.0.1")
    assert spoofed.is_rejected and rejection(spoofed) == (0x01, 0x01, 0x03)
    assert AuditEvent.objects.get(action="dicom.association_rejected").detail["reason"] == (
        "address not allowed for this AE title"
    )
    real = associate(receiver, source="127.0.0.2")
    assert real.is_established
    try:
        status = real.send_c_store(dataset(cr_film_bytes(patient_id="MRN-1", study_uid=generate_uid())))
        assert status.Status == 0x0000
    finally:
        real.release()
    assert Study.objects.count() == 1


def test_each_c_store_is_filed_before_it_is_answered_and_refusals_say_why(peer, receiver):
    uid = generate_uid()
    assoc = associate(receiver)
    assert assoc.is_established
    try:
        status = assoc.send_c_store(dataset(cr_film_bytes(patient_id="MRN-2", study_uid=uid)))
        assert status.Status == 0x0000
        # Filed while the association is still open: nothing waits for the sender to let go.
        study = Study.objects.get(study_instance_uid=uid)
        assert study.images.count() == 1 and study.status == Study.Status.QUEUED

        ct = dataset(cr_film_bytes(patient_id="MRN-2", study_uid=generate_uid()))
        ct.Modality, ct.SOPClassUID = "CT", CT_STORAGE
        ct.file_meta.MediaStorageSOPClassUID = CT_STORAGE
        status = assoc.send_c_store(ct)
        assert status.Status == 0x0122
        assert status.ErrorComment == "CT: the AI reads chest radiographs (CR, DX) only."
    finally:
        assoc.release()
    assert Study.objects.count() == 1


def test_associations_are_limited_per_peer_and_in_total(peer, receiver, settings):
    DicomPeer.objects.filter(pk=peer.pk).update(max_associations=2)
    held = [associate(receiver), associate(receiver)]
    assert all(a.is_established for a in held)
    third = associate(receiver)
    assert third.is_rejected and rejection(third) == (0x02, 0x03, 0x02), "transient, local limit exceeded"
    held.pop().release()
    time.sleep(0.3)
    again = associate(receiver)
    assert again.is_established
    held.append(again)

    settings.DICOM_MAX_ASSOCIATIONS = 2
    DicomPeer.objects.filter(pk=peer.pk).update(max_associations=10)
    over_total = associate(receiver)
    assert over_total.is_rejected and rejection(over_total) == (0x02, 0x03, 0x02)
    for assoc in held:
        assoc.release()


def test_silent_connections_cannot_crowd_out_a_registered_peer(peer, receiver, settings):
    """Issue 31: ten idle associations from an unknown AE made the real PACS's be rejected."""
    settings.DICOM_MAX_PENDING_PER_ADDRESS = 2
    silent = [socket.create_connection(("127.0.0.1", receiver), source_address=("127.0.0.3", 0)) for _ in range(2)]
    time.sleep(0.3)
    refused = socket.create_connection(("127.0.0.1", receiver), source_address=("127.0.0.3", 0))
    refused.settimeout(5)
    assert refused.recv(1) == b"", "closed at accept"
    assoc = associate(receiver)
    assert assoc.is_established, "the registered peer still gets in"
    assoc.release()
    for sock in [*silent, refused]:
        sock.close()


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _certificate(directory: Path, name: str, ca: str | None) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    subject = f"/CN={name}"
    if ca is None:  # self-signed CA
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                 "-days", "2", "-subj", subject)  # fmt: skip
    else:
        csr = directory / f"{name}.csr"
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", subject)
        extensions = directory / f"{name}.ext"
        extensions.write_text("subjectAltName=IP:127.0.0.1\n")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(directory / f"{ca}.pem"), "-CAkey",
                 str(directory / f"{ca}.key"), "-CAcreateserial", "-out", str(cert), "-days", "2",
                 "-extfile", str(extensions))  # fmt: skip
    return cert, key


def test_dicom_tls_takes_a_peer_with_the_right_certificate_and_refuses_one_without(peer, settings, tmp_path):
    require_tool(shutil.which("openssl"), "openssl")
    import ssl

    _certificate(tmp_path, "hospital-ca", None)
    _certificate(tmp_path, "rogue-ca", None)
    server_cert, server_key = _certificate(tmp_path, "portal", "hospital-ca")
    client_cert, client_key = _certificate(tmp_path, "wardpacs", "hospital-ca")
    rogue_cert, rogue_key = _certificate(tmp_path, "rogue", "rogue-ca")
    settings.DICOM_TLS_CERT_FILE, settings.DICOM_TLS_KEY_FILE = str(server_cert), str(server_key)
    settings.DICOM_TLS_CA_FILE = str(tmp_path / "hospital-ca.pem")
    port = free_port()
    server = DicomReceiver(port=port, ae_title=PORTAL_AE, host="127.0.0.1")
    server.start(block=False)

    def client(cert: Path | None, key: Path | None) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tmp_path / "hospital-ca.pem"))
        context.check_hostname = False
        if cert is not None:
            context.load_cert_chain(str(cert), str(key))
        return context

    try:
        good = associate(port, tls_args=(client(client_cert, client_key), None))
        assert good.is_established
        assert good.send_c_echo().Status == 0x0000
        good.release()
        assert not associate(port, tls_args=(client(None, None), None)).is_established, "no client certificate"
        assert not associate(port, tls_args=(client(rogue_cert, rogue_key), None)).is_established, "another CA"
        assert not associate(port).is_established, "plain TCP"
        # A client that opens a TLS connection and says nothing does not stop the others (handshake per thread).
        with socket.create_connection(("127.0.0.1", port)):
            again = associate(port, tls_args=(client(client_cert, client_key), None))
            assert again.is_established
            again.release()
    finally:
        server.stop()


def test_dcmtk_senders_are_rejected_or_filed_by_ae_title(peer, receiver, tmp_path):
    require_tool(shutil.which("echoscu") and shutil.which("storescu"), "dcmtk (echoscu, storescu)")
    stranger = subprocess.run(["echoscu", "-aet", "STRANGER", "-aec", PORTAL_AE, "127.0.0.1", str(receiver)],
                              capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert stranger.returncode != 0 and "Association Rejected" in stranger.stdout + stranger.stderr
    film = tmp_path / "film.dcm"
    film.write_bytes(cr_film_bytes(patient_id="MRN-DCMTK", study_uid=generate_uid()))
    sent = subprocess.run(["storescu", "-aet", "WARDPACS", "-aec", PORTAL_AE, "127.0.0.1", str(receiver), str(film)],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert Study.objects.get().patient.medical_record_number == "MRN-DCMTK"


def _big_film(path: Path, pixel_bytes: int) -> None:
    """A CR film whose pixel data is `pixel_bytes` long, written in pieces (never whole in memory)."""
    ds = dataset(cr_film_bytes(patient_id="MRN-BIG", study_uid=generate_uid(), size=16))
    del ds.PixelData
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    with path.open("wb") as out:
        out.write(buffer.getvalue())
        out.write(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, pixel_bytes))
        chunk = b"\x00" * (1 << 20)
        for _ in range(pixel_bytes // len(chunk)):
            out.write(chunk)


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_dataset_over_the_limit_is_refused_while_it_streams_and_the_receiver_does_not_grow(peer, tmp_path):
    """Issue 31: a 400 MB dataset from an unknown AE was buffered whole (+403 MB) before it was refused. Here a
    registered peer sends 256 MB against an 8 MB limit to `manage.py dicom_receiver` in its own process."""
    from pynetdicom import _config

    port, scratch = free_port(), tmp_path / "tmp"
    scratch.mkdir()
    database = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings.test",
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        "DICOM_MAX_DATASET_BYTES": str(8 * 2**20),
        "DICOM_INBOX_DIR": str(tmp_path / "inbox"),
        "TMPDIR": str(scratch),
    }
    log = (tmp_path / "receiver.log").open("wb")
    process = subprocess.Popen([sys.executable, "manage.py", "dicom_receiver", "--port", str(port), "--ae-title",
                                PORTAL_AE], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    big = tmp_path / "big.dcm"
    _big_film(big, 256 * 2**20)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, (tmp_path / "receiver.log").read_text()
                time.sleep(0.3)
        warm = associate(port)
        assert warm.send_c_store(dataset(cr_film_bytes(patient_id="MRN-W", study_uid=generate_uid()))).Status == 0
        warm.release()
        before = _peak_rss_mb(process.pid)

        _config.STORE_SEND_CHUNKED_DATASET = True  # the sender streams the file too
        try:
            assoc = associate(port, explicit=True)  # a streamed file is sent in its own transfer syntax
            assert assoc.is_established
            started = time.perf_counter()
            status = assoc.send_c_store(big)
            elapsed = time.perf_counter() - started
        finally:
            _config.STORE_SEND_CHUNKED_DATASET = False
        assert not status, "never answered: the association ends while the dataset streams"
        deadline = time.monotonic() + 5
        while assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not assoc.is_established
        time.sleep(0.5)
        grown = _peak_rss_mb(process.pid) - before
        print(
            f"\n256 MB dataset against an 8 MB limit: aborted after {elapsed:.2f} s; receiver peak RSS +{grown:.1f} MB"
        )
        assert grown < 32, f"the receiver's peak memory grew by {grown:.0f} MB"
        assert not list(scratch.glob("*.dcm")), "the partial dataset's temporary file is removed"
        assert Study.objects.count() == 1, "only the warm-up film"
        # The receiver still serves.
        after = associate(port)
        assert after.is_established and after.send_c_echo().Status == 0
        after.release()
    finally:
        process.terminate()
        process.wait(10)
