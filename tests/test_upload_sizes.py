"""Files that lie about their size are refused on every path with the reason, and nothing is stored:
the study form, the API, inspect-dicom and a PACS's C-STORE (dicom_ingest). The pixel decoders are made to
fail the test if they run: each refusal comes from the bytes' own headers (tests/ml/test_untrusted_sizes.py
has the decode module's side)."""

from __future__ import annotations

import io
import struct

import pydicom
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

from diagnostics.integrations.dicom_in.services import CANNOT_UNDERSTAND, DicomRefused, dicom_ingest
from diagnostics.models import DicomPeer, Image, Study, User
from diagnostics.services.upload_admission import upload_decode_cost
from ml.serving import codestream, decode

from .conftest import api_client_for, login_client
from .factories import UserFactory
from .images import cr_film_bytes


def _save(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def lying_j2k(patient_id: str = "MRN-1") -> bytes:
    """A real film's JPEG 2000 codestream whose SIZ says 16000x16000 under a 256x256 DICOM header."""
    ds = pydicom.dcmread(io.BytesIO(cr_film_bytes(patient_id=patient_id, study_uid=generate_uid())))
    ds.compress(JPEG2000Lossless)
    data = bytearray(_save(ds))
    at = data.index(codestream.J2K_MAGIC)
    data[at + 8 : at + 16] = struct.pack(">II", 16000, 16000)
    return bytes(data)


def deflate_bomb(patient_id: str = "MRN-1", extra: int = 3 * 2**20) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(cr_film_bytes(patient_id=patient_id, study_uid=generate_uid())))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.add_new((0x0009, 0x0010), "LO", "BOMB")
    ds.add_new((0x0009, 0x1000), "OB", bytes(extra))
    return _save(ds)


@pytest.fixture(autouse=True)
def no_pixel_decoding(monkeypatch):
    def decoded(*args, **kwargs):
        raise AssertionError("a pixel decoder ran")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(decoded))


@pytest.fixture
def small_inflate_cap(monkeypatch):
    monkeypatch.setattr(decode, "MAX_INFLATED_BYTES", 2 * 2**20)


LIE = "header says 256x256 but the image data (JPEG 2000) is 16000x16000"


def test_the_study_form_refuses_a_lying_header_and_stores_nothing(owner, patient, media_root):
    upload = SimpleUploadedFile("film.dcm", lying_j2k(), content_type="application/dicom")
    response = login_client(owner).post(reverse("study_new", args=[patient.pk]), {"modality": "CR", "images": [upload]})
    assert response.status_code == 400
    assert LIE in response.content.decode()
    assert not Study.objects.exists() and not Image.objects.exists() and list(media_root.rglob("*")) == []


def test_the_api_refuses_a_deflate_bomb_and_stores_nothing(owner, patient, media_root, small_inflate_cap):
    upload = SimpleUploadedFile("bomb.dcm", deflate_bomb(), content_type="application/dicom")
    response = api_client_for(owner).post(
        reverse("api_study_list"), {"patient_id": patient.pk, "images": [upload]}, format="multipart"
    )
    assert response.status_code == 400
    assert "inflates to more than 2 MB" in str(response.json())
    assert not Study.objects.exists() and list(media_root.rglob("*")) == []


def test_inspect_dicom_reads_no_more_than_the_cap(owner, patient, small_inflate_cap):
    upload = SimpleUploadedFile("bomb.dcm", deflate_bomb(), content_type="application/dicom")
    response = login_client(owner).post(reverse("study_inspect_dicom", args=[patient.pk]), {"images": [upload]})
    assert response.status_code == 200
    assert "inflates to more than 2 MB" in response.content.decode()


@pytest.mark.parametrize("make, reason", [(lying_j2k, LIE), (deflate_bomb, "inflates to more than 2 MB")])
def test_a_pacs_film_that_lies_is_refused_at_c_store_and_nothing_is_filed(team, media_root, small_inflate_cap,
                                                                          make, reason):  # fmt: skip
    service = UserFactory(username="size-pacs", team=team, role=User.Role.API_CLIENT)
    peer = DicomPeer.objects.create(ae_title="SIZEPACS", team=team, service_user=service,
                                    allowed_networks="127.0.0.1")  # fmt: skip
    with pytest.raises(DicomRefused) as refused:
        dicom_ingest(data=make(), user=service, peer=peer)
    assert refused.value.status == CANNOT_UNDERSTAND and len(refused.value.comment) <= 64
    assert reason in refused.value.reason
    assert not Study.objects.exists() and not Image.objects.exists() and list(media_root.rglob("*")) == []


def test_the_per_user_budget_counts_the_codestream_not_the_header():
    honest = cr_film_bytes(patient_id="MRN-1", study_uid=generate_uid())
    assert upload_decode_cost(files=[("a.dcm", honest)], target_size=1024) == 256 * 256 * 2
    # A lying file counts nothing: it is refused from its headers before any pixel is decoded.
    assert upload_decode_cost(files=[("b.dcm", lying_j2k())], target_size=1024) == 0


@pytest.mark.django_db
def test_a_bomb_stored_before_the_bounds_is_read_within_the_cap_by_the_pacs_and_fhir_writers(
    owner, patient, small_inflate_cap
):
    """Films stored before the bounds came in were never checked: the results writers read them through the
    same bounded reader (a PACS delivery's failed attempt, an empty FHIR value), never inflating them whole."""
    from diagnostics.integrations.fhir.services import _header_value
    from diagnostics.integrations.pacs_out.services import _source_dataset

    from .factories import StudyFactory

    image = StudyFactory(patient=patient, created_by=owner).images.get()
    with image.file.storage.open(image.file.name, "wb") as handle:
        handle.write(deflate_bomb())
    Image.objects.filter(pk=image.pk).update(format=Image.Format.DICOM)
    image.refresh_from_db()

    with pytest.raises(decode.ImageDecodeError):
        _source_dataset(image)
    assert _header_value(image, "StudyDate") == ""
