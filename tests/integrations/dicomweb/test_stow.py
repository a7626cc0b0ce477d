"""DICOMweb STOW-RS (diagnostics/integrations/dicomweb/): films stored by HTTP go through the DICOM receiver's
own ingest (the same checks and refusals), for the token's care team, answered as a DICOM JSON store
response. Pushed by a real client: Orthanc's DICOMweb plugin, and python-requests."""

from __future__ import annotations

import io
import json
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest
import requests
from django.urls import reverse
from pydicom.uid import generate_uid

from diagnostics.models import AuditEvent, Study

from ...api.conftest import portal_server  # noqa: F401 - the portal served over HTTP (a fixture)
from ...chaos import free_port
from ...conftest import api_client_for, require_tool
from ...factories import ApiTokenFactory
from ...images import cr_film_bytes

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


def multipart(*parts: bytes, content_type: str = "application/dicom") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b"".join(
        b"--" + boundary.encode() + b"\r\nContent-Type: " + content_type.encode() + b"\r\n\r\n" + part + b"\r\n"
        for part in parts
    )
    body += b"--" + boundary.encode() + b"--\r\n"
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def ct_film(study_uid: str) -> bytes:
    dataset = pydicom.dcmread(io.BytesIO(cr_film_bytes(patient_id="MRN-CT", study_uid=study_uid)))
    dataset.Modality = "CT"
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


def uid_of(data: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


def token_for(user) -> str:  # noqa: ANN001
    """A real API token key of `user` (the shape api_token_issue gives), for clients outside Django's test client."""
    key = f"pdp_{secrets.token_urlsafe(6)[:8]}{secrets.token_urlsafe(32)}"
    ApiTokenFactory(user=user, key=key)
    return key


def items(body: dict, tag: str) -> list[dict]:
    return body.get(tag, {}).get("Value", [])


@pytest.mark.django_db
def test_stow_files_films_through_the_receivers_ingest_and_answers_each_instance(owner, outsider):
    uid = generate_uid()
    good = cr_film_bytes(patient_id="MRN-STOW-1", study_uid=uid)
    ct = ct_film(generate_uid())
    body, content_type = multipart(good, ct, b"not a DICOM file at all")
    client = api_client_for(owner)
    url = reverse("dicomweb_stow")

    response = client.generic("POST", url, body, content_type=content_type, HTTP_ACCEPT="application/dicom+json")
    assert response.status_code == 202, response.content  # some stored, some not
    assert response["Content-Type"] == "application/dicom+json"
    answer = response.json()
    [stored] = items(answer, "00081199")
    assert stored["00081150"]["Value"] == [CR_STORAGE] and stored["00081155"]["Value"] == [uid_of(good)]
    failed = items(answer, "00081198")
    assert [(f["00081155"].get("Value", [""])[0], f["00081197"]["Value"][0]) for f in failed] == [
        (uid_of(ct), 0x0122),  # the receiver's refusal: not a radiograph
        ("", 0xC000),  # cannot understand
    ]
    study = Study.objects.get(study_instance_uid=uid)
    assert study.patient.team == owner.team and study.created_by == owner and study.dicom_peer is None
    assert study.patient.medical_record_number == "MRN-STOW-1" and study.accession_number == "ACC-PACS-1"
    assert not Study.objects.filter(patient__medical_record_number="MRN-CT").exists()
    stow = AuditEvent.objects.get(action="dicom.stow_received")
    assert (stow.detail["instances"], stow.detail["stored"], stow.detail["failed"]) == (3, 1, 2)
    assert AuditEvent.objects.filter(action="dicom.instance_refused").count() == 2

    # Sent again: the same instance, acknowledged, filed once.
    again, again_type = multipart(good)
    response = client.generic("POST", url, again, content_type=again_type)
    assert response.status_code == 200 and len(items(response.json(), "00081199")) == 1
    assert study.images.count() == 1
    # Another team's token cannot file an instance this team holds: every instance failed, 409.
    response = api_client_for(outsider).generic("POST", url, again, content_type=again_type)
    assert response.status_code == 409
    assert items(response.json(), "00081198")[0]["00081197"]["Value"] == [0xC002]

    # Not STOW-RS: said, nothing stored. Without a token: 401.
    response = client.generic("POST", url, b"{}", content_type="application/json")
    assert response.status_code == 415 and "multipart/related" in response.json()["error"]["message"]
    png_body, png_type = multipart(b"\x89PNG", content_type="image/png")
    assert client.generic("POST", url, png_body, content_type=png_type).status_code == 415
    truncated = body[: len(body) // 2]
    assert client.generic("POST", url, truncated, content_type=content_type).status_code == 400
    assert client.__class__().generic("POST", url, body, content_type=content_type).status_code == 401
    assert Study.objects.count() == 1


@pytest.mark.django_db
def test_a_deflate_bomb_is_refused_by_the_ingest_without_being_inflated_first(owner, monkeypatch):
    """The part's UIDs come from its File Meta Information; the dataset is read only by dicom_ingest, which
    inflates a deflated one within its cap (issue 31): a 2 MB cap, a bomb that inflates past it."""
    from ml.serving import decode

    from ...test_upload_sizes import deflate_bomb

    monkeypatch.setattr(decode, "MAX_INFLATED_BYTES", 2 * 2**20)
    bomb = deflate_bomb(patient_id="MRN-BOMB")
    body, content_type = multipart(bomb)
    response = api_client_for(owner).generic("POST", reverse("dicomweb_stow"), body, content_type=content_type)
    assert response.status_code == 409
    [failed] = items(response.json(), "00081198")
    assert failed["00081155"]["Value"] == [pydicom.dcmread(io.BytesIO(bomb)).SOPInstanceUID]  # 3 MB: fine here
    assert failed["00081197"]["Value"] == [0xC000]
    assert not Study.objects.exists()
    assert "inflates to more than 2 MB" in str(AuditEvent.objects.get(action="dicom.instance_refused").detail)


@pytest.mark.django_db(transaction=True)
def test_python_requests_pushes_films_over_http(portal_server, owner):  # noqa: F811
    """A real HTTP client over a socket (python-requests), several films in one request."""
    key = token_for(owner)
    uid = generate_uid()
    films = [cr_film_bytes(patient_id="MRN-STOW-2", study_uid=uid, seed=seed) for seed in (0, 1)]
    body, content_type = multipart(*films)
    response = requests.post(f"{portal_server}/dicomweb/studies", data=body, timeout=60,
                             headers={"Content-Type": content_type, "Authorization": f"Bearer {key}",
                                      "Accept": "application/dicom+json"})  # fmt: skip
    assert response.status_code == 200, response.text
    assert [i["00081155"]["Value"][0] for i in items(response.json(), "00081199")] == [uid_of(f) for f in films]
    assert Study.objects.get(study_instance_uid=uid).images.count() == 2


@contextmanager
def orthanc_pushing_to(portal_url: str, key: str, directory: Path, *, chunked: bool | None) -> Iterator[str]:
    """Orthanc (Debian's orthanc + orthanc-dicomweb) with the portal as a DICOMweb server, the API token in its
    HttpHeaders; `chunked` None leaves Orthanc's default (chunked uploads). Yields Orthanc's REST URL."""
    binary = shutil.which("Orthanc")
    require_tool(binary and Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so").exists(),
                 "Orthanc with its DICOMweb plugin (orthanc, orthanc-dicomweb)")  # fmt: skip
    http_port = free_port()
    (directory / "db").mkdir()
    server: dict[str, object] = {"Url": f"{portal_url}/dicomweb/", "HttpHeaders": {"Authorization": f"Bearer {key}"}}
    if chunked is not None:
        server["ChunkedTransfers"] = chunked
    config = {
        "Name": "stow-test", "HttpPort": http_port, "DicomPort": free_port(), "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "StorageDirectory": str(directory / "db"), "IndexDirectory": str(directory / "db"),
        "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
        "DicomWeb": {"Enable": True, "Servers": {"portal": server}},
    }  # fmt: skip
    (directory / "orthanc.json").write_text(json.dumps(config))
    log = (directory / "orthanc.log").open("wb")
    process = subprocess.Popen([str(binary), str(directory / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    orthanc = f"http://127.0.0.1:{http_port}"
    try:
        wait_for_http(f"{orthanc}/system")
        yield orthanc
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def wait_for_http(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            requests.get(url, timeout=5)
            return
        except (requests.ConnectionError, requests.Timeout):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def push_a_study(orthanc: str, owner, directory: Path) -> float:  # noqa: ANN001
    """Two films stored in Orthanc, then sent by its DICOMweb client: they are one study of the token's team."""
    uid = generate_uid()
    films = [cr_film_bytes(patient_id="MRN-ORTH-1", study_uid=uid, seed=seed) for seed in (0, 1)]
    for film in films:
        assert requests.post(f"{orthanc}/instances", data=film, timeout=10).ok
    [study_id] = [r["ID"] for r in requests.post(f"{orthanc}/tools/lookup", data=uid, timeout=10).json()]
    started = time.perf_counter()
    sent = requests.post(f"{orthanc}/dicom-web/servers/portal/stow", json={"Resources": [study_id]}, timeout=60)
    elapsed = time.perf_counter() - started
    assert sent.ok, (sent.status_code, sent.text, (directory / "orthanc.log").read_text()[-2000:])
    study = Study.objects.get(study_instance_uid=uid)
    assert study.images.count() == 2 and study.patient.team == owner.team and study.dicom_peer is None
    assert sorted(study.images.values_list("sop_instance_uid", flat=True)) == sorted(uid_of(f) for f in films)
    return elapsed


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_orthancs_dicomweb_client_pushes_a_study_to_the_portal(portal_server, owner, tmp_path):  # noqa: F811
    """Behind Django's own server (no chunked request bodies), with Orthanc's chunked uploads turned off."""
    with orthanc_pushing_to(portal_server, token_for(owner), tmp_path, chunked=False) as orthanc:
        assert push_a_study(orthanc, owner, tmp_path) < 30


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_orthancs_default_chunked_upload_reaches_the_portal_under_gunicorn(owner, tmp_path, settings):
    """Production's server (gunicorn decodes chunked bodies and says so, wsgi.input_terminated) and Orthanc's
    defaults: its chunked STOW-RS upload is read to its end."""
    from ...worker import CeleryWorker

    port = free_port()
    env = CeleryWorker(database_name=settings.DATABASES["default"]["NAME"]).environment()
    log = (tmp_path / "gunicorn.log").open("wb")
    gunicorn = subprocess.Popen(
        [str(Path(sys.executable).with_name("gunicorn")), "portal.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--workers", "1", "--timeout", "120"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    portal = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{portal}/fhir/metadata", seconds=60)
        with orthanc_pushing_to(portal, token_for(owner), tmp_path, chunked=None) as orthanc:
            assert push_a_study(orthanc, owner, tmp_path) < 30
    finally:
        gunicorn.terminate()
        gunicorn.wait(10)
        log.close()
