"""Uploads are judged by content; a refused file says why and nothing is stored."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from diagnostics.models import AuditEvent, Image, Study

from .conftest import api_client_for, jpeg_upload, login_client
from .images import png_bytes

pytestmark = pytest.mark.django_db


def test_page_refuses_a_non_image_with_a_clear_message(owner, patient, settings, media_root):
    client = login_client(owner)
    fake = SimpleUploadedFile("chest.jpeg", b"%PDF-1.7 this is a PDF, not an X-ray", content_type="image/jpeg")
    response = client.post(reverse("study_new", args=[patient.pk]), {"modality": "CR", "images": [fake]})
    assert response.status_code == 400
    assert "chest.jpeg: This file is not a JPEG, PNG or DICOM image" in response.content.decode()
    assert not Study.objects.exists() and not Image.objects.exists()
    assert list(media_root.rglob("*")) == []


def test_one_bad_file_refuses_the_whole_study(owner, patient, settings, media_root):
    api = api_client_for(owner)
    empty = SimpleUploadedFile("empty.png", b"", content_type="image/png")
    response = api.post(
        reverse("api_study_list"), {"patient_id": patient.pk, "images": [jpeg_upload(), empty]}, format="multipart"
    )
    assert response.status_code == 400
    assert "empty.png: the file is empty." in str(response.json())
    assert not Study.objects.exists() and list(media_root.rglob("*")) == []


def test_page_refuses_the_study_when_one_file_is_refused_and_names_each_file(owner, patient, media_root):
    """A refused file among accepted ones: nothing is stored, the refused file's own reason is next to its
    name, and the accepted files are listed as not uploaded yet."""
    fake = SimpleUploadedFile("letter.png", b"this is not a picture", content_type="image/png")
    response = login_client(owner).post(
        reverse("study_new", args=[patient.pk]),
        {"modality": "CR", "images": [jpeg_upload("chest.jpeg"), fake, jpeg_upload("second.jpeg", seed=1)]},
    )
    html = response.content.decode()
    assert response.status_code == 400
    assert "<strong>letter.png: This file is not a JPEG, PNG or DICOM image" in html
    assert "chest.jpeg: accepted, not uploaded yet." in html and "second.jpeg: accepted, not uploaded yet." in html
    # In the order sent, so the page's script can mark its own list of files.
    assert html.index("chest.jpeg: accepted") < html.index("letter.png: This") < html.index("second.jpeg: accepted")
    assert "Nothing was stored" in html
    assert not Study.objects.exists() and not Image.objects.exists() and list(media_root.rglob("*")) == []


def test_page_gives_every_refused_files_own_reason_when_all_are_refused(owner, patient, media_root):
    empty = SimpleUploadedFile("empty.png", b"", content_type="image/png")
    fake = SimpleUploadedFile("letter.jpeg", b"%PDF-1.7", content_type="image/jpeg")
    url = reverse("study_new", args=[patient.pk])
    response = login_client(owner).post(url, {"modality": "CR", "images": [empty, fake]})
    html = response.content.decode()
    assert response.status_code == 400
    assert "empty.png: the file is empty." in html
    assert "letter.jpeg: This file is not a JPEG, PNG or DICOM image" in html
    assert "Attach at least one" not in html and "accepted, not uploaded yet" not in html
    assert not Study.objects.exists() and list(media_root.rglob("*")) == []


def test_page_without_files_asks_for_one(owner, patient, media_root):
    response = login_client(owner).post(reverse("study_new", args=[patient.pk]), {"modality": "CR"})
    assert response.status_code == 400 and "Attach at least one X-ray image." in response.content.decode()
    assert not Study.objects.exists()


def test_api_still_refuses_the_whole_request_with_every_reason(owner, patient, media_root):
    empty = SimpleUploadedFile("empty.png", b"", content_type="image/png")
    fake = SimpleUploadedFile("letter.jpeg", b"%PDF-1.7", content_type="image/jpeg")
    response = api_client_for(owner).post(
        reverse("api_study_list"),
        {"patient_id": patient.pk, "images": [jpeg_upload(), empty, fake]},
        format="multipart",
    )
    assert response.status_code == 400
    body = str(response.json())
    assert "empty.png: the file is empty." in body and "letter.jpeg: This file is not a JPEG" in body
    assert "accepted" not in body
    assert not Study.objects.exists() and list(media_root.rglob("*")) == []


def test_page_upload_stores_the_image_under_a_random_name(owner, patient, settings, media_root):
    client = login_client(owner)
    png = SimpleUploadedFile("Ada_Lovelace_MRN-A-1.png", png_bytes(size=300, mode="RGBA"), content_type="image/png")
    response = client.post(
        reverse("study_new", args=[patient.pk]), {"modality": "DX", "view_position": "PA", "images": [png]}
    )
    study = Study.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("study_detail", args=[study.pk])
    image = study.images.get()
    assert (image.format, image.width, image.height) == ("PNG", 300, 300)
    assert "Ada" not in image.file.name and "MRN" not in image.file.name
    assert study.status == Study.Status.QUEUED
    assert AuditEvent.objects.filter(action="study.created", object_id=str(study.pk), actor=owner).exists()


def test_a_failure_after_the_files_are_written_leaves_no_file_behind(owner, patient, settings, media_root, monkeypatch):
    from diagnostics.services import studies
    from diagnostics.services.images import image_validate_upload

    uploads = [image_validate_upload(filename=f"{i}.png", data=png_bytes(seed=i)) for i in range(2)]

    def audit_fails(**kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(studies, "audit_record", audit_fails)
    with pytest.raises(RuntimeError):
        studies.study_create(user=owner, patient=patient, uploads=uploads)
    assert not Study.objects.exists() and not Image.objects.exists()
    assert [p for p in media_root.rglob("*") if p.is_file()] == []


def test_a_polyglot_is_judged_by_what_it_decodes_as_and_only_ever_served_re_encoded(owner, patient, media_root):
    from diagnostics.services.images import image_validate_upload

    with pytest.raises(Exception, match="not a JPEG, PNG or DICOM"):
        image_validate_upload(filename="x.gif", data=b"GIF89a/*<script>alert(1)</script>*/")
    html_tail = b"<html><script>alert(document.cookie)</script></html>"
    client = login_client(owner)
    polyglot = SimpleUploadedFile("chest.jpeg", jpeg_bytes_with_tail(html_tail), content_type="image/jpeg")
    client.post(reverse("study_new", args=[patient.pk]), {"modality": "CR", "images": [polyglot]})
    image = Image.objects.get()
    preview = client.get(reverse("image_preview", args=[image.pk]))
    assert preview["Content-Type"] == "image/png" and preview["X-Content-Type-Options"] == "nosniff"
    assert b"<script>" not in preview.content  # the browser gets a fresh PNG, never the uploaded bytes


def jpeg_bytes_with_tail(tail: bytes) -> bytes:
    from .images import jpeg_bytes

    return jpeg_bytes() + tail


@pytest.mark.django_db(transaction=True)
def test_the_loser_of_a_same_key_race_answers_as_a_retry_and_leaves_no_file(
    owner, patient, settings, media_root, monkeypatch
):
    """Two requests with one Idempotency-Key: the second passes the replay check before the first
    commits, so its own insert of the key fails; its study rolls back and its files must go too."""
    from diagnostics.services import studies
    from diagnostics.services.images import image_validate_upload

    files = [("chest.jpeg", jpeg_upload().read())]
    fields = {"patient_id": patient.pk, "accession_number": "", "modality": "CR", "view_position": ""}
    first = studies.study_accept(user=owner, patient=patient, files=files, fields=fields, idempotency_key="k-1")
    stored = sorted(p for p in media_root.rglob("*") if p.is_file())
    real_replay = studies.idempotency_replay
    calls = []

    def racing_replay(**kwargs):
        calls.append(kwargs)
        return None if len(calls) == 1 else real_replay(**kwargs)  # the first check saw no key yet

    monkeypatch.setattr(studies, "idempotency_replay", racing_replay)
    uploads = [image_validate_upload(filename=name, data=data) for name, data in files]
    second = studies.study_accept(
        user=owner, patient=patient, files=files, fields=fields, idempotency_key="k-1", uploads=uploads
    )
    assert second.replayed and second.study.pk == first.study.pk
    assert Study.objects.count() == 1 and Image.objects.count() == 1
    assert sorted(p for p in media_root.rglob("*") if p.is_file()) == stored  # the loser's file is gone


def test_the_page_takes_at_most_as_many_films_per_study_as_the_api(owner, patient, media_root):
    from diagnostics.services.studies import MAX_IMAGES_PER_STUDY

    films = [jpeg_upload(name=f"f{i}.jpeg", seed=i) for i in range(MAX_IMAGES_PER_STUDY + 1)]
    response = login_client(owner).post(reverse("study_new", args=[patient.pk]), {"modality": "CR", "images": films})
    assert response.status_code == 400
    assert f"at most {MAX_IMAGES_PER_STUDY} images" in response.content.decode()
    assert not Study.objects.exists() and list(media_root.rglob("*")) == []


def test_a_full_disk_answers_507_with_a_reason_and_leaves_no_file(owner, patient, media_root, monkeypatch):
    """The disk fills up in the middle of writing the film: the page and the API say why (507), no
    study is stored and no empty or truncated file is left (Django's storage used to leave one)."""
    import errno

    from django.core.files.base import ContentFile

    from diagnostics.services import images

    class FullDisk(ContentFile):
        def chunks(self, chunk_size=None):
            yield self.read(10)  # a first chunk is written, then the device is full
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(images, "ContentFile", FullDisk)
    page = login_client(owner).post(
        reverse("study_new", args=[patient.pk]), {"modality": "CR", "images": [jpeg_upload()]}
    )
    assert page.status_code == 507 and "cannot store images right now" in page.content.decode()
    api = api_client_for(owner).post(
        reverse("api_study_list"), {"patient_id": patient.pk, "images": [jpeg_upload()]}, format="multipart"
    )
    assert api.status_code == 507 and api.json()["error"]["code"] == "storage_unavailable"
    assert not Study.objects.exists() and not Image.objects.exists()
    assert [p for p in media_root.rglob("*") if p.is_file()] == []


def test_one_user_cannot_hold_the_web_workers_with_a_flood_of_heavy_uploads(owner, member, patient, settings):
    """Decoding is budgeted per user (services.upload_admission): while one of a user's uploads is being
    decoded, another that would go over the budget is answered 429 with Retry-After and nothing is stored;
    other users are not affected, and the budget comes back when the upload ends."""
    from diagnostics.services.upload_admission import upload_admission, upload_decode_cost

    film = jpeg_upload()
    cost = upload_decode_cost(files=[("chest.jpeg", film.read())], target_size=1024)
    assert cost > 0
    settings.UPLOAD_DECODE_BUDGET_BYTES = cost  # room for one such film at a time
    api = api_client_for(owner)

    def post(client, seed=0):
        return client.post(
            "/api/v1/studies/", {"patient_id": patient.pk, "images": [jpeg_upload(seed=seed)]}, format="multipart"
        )

    with upload_admission(user_id=owner.pk, cost=cost):  # one of the owner's uploads is being decoded
        busy = post(api)
        assert busy.status_code == 429 and int(busy["Retry-After"]) >= 1
        assert busy.json()["error"]["code"] == "throttled" and "send this one again" in busy.json()["error"]["message"]
        page = login_client(owner).post(
            reverse("study_new", args=[patient.pk]), {"modality": "CR", "images": [jpeg_upload()]}
        )
        assert page.status_code == 429 and int(page["Retry-After"]) >= 1
        assert "send this one again" in page.content.decode()
        assert not Study.objects.exists() and not Image.objects.exists()
        assert post(api_client_for(member)).status_code == 202  # another user goes on
    assert post(api, seed=1).status_code == 202
    # One request alone is always admitted, even above the budget (its own decode budget bounds it).
    settings.UPLOAD_DECODE_BUDGET_BYTES = 1
    assert post(api, seed=2).status_code == 202


def test_the_decode_estimate_counts_what_the_decode_will_hold():
    import io

    import numpy as np
    from PIL import Image as PILImage

    from ml.serving.decode import decoded_bytes_estimate

    from .images import dicom_bytes

    assert decoded_bytes_estimate(dicom_bytes(np.zeros((300, 200), np.uint16))) == 300 * 200 * 2
    assert decoded_bytes_estimate(png_bytes(size=640)) == 640 * 640
    buffer = io.BytesIO()
    PILImage.new("L", (2000, 1700), 90).save(buffer, "JPEG")
    big_jpeg = buffer.getvalue()
    assert decoded_bytes_estimate(big_jpeg) == decoded_bytes_estimate(big_jpeg, target_size=1024) == 2000 * 1700
    # At a reduced DCT scale, as the decode does: 1/2 for a 512 px target (1/4 would be under 512 px).
    assert decoded_bytes_estimate(big_jpeg, target_size=512) == 1000 * 850
    assert decoded_bytes_estimate(b"not an image") == 0


def test_uploads_wait_when_the_ai_queue_is_full(owner, patient, settings):
    """INFERENCE_BACKLOG_LIMIT studies waiting for the AI: a new upload is answered 503 with Retry-After and
    nothing is stored (services.upload_admission); below the limit, or with no limit, it is accepted."""
    from .factories import StudyFactory

    settings.INFERENCE_BACKLOG_LIMIT = 2
    waiting = [StudyFactory(created_by=owner, patient=patient) for _ in range(2)]
    Study.objects.filter(pk__in=[study.pk for study in waiting]).update(status=Study.Status.QUEUED)
    api = api_client_for(owner)
    full = api.post("/api/v1/studies/", {"patient_id": patient.pk, "images": [jpeg_upload()]}, format="multipart")
    assert full.status_code == 503 and int(full["Retry-After"]) >= 1
    assert full.json()["error"]["code"] == "inference_busy"
    page = login_client(owner).post(
        reverse("study_new", args=[patient.pk]), {"modality": "CR", "images": [jpeg_upload()]}
    )
    assert page.status_code == 503 and int(page["Retry-After"]) >= 1 and "waiting for the AI" in page.content.decode()
    assert Study.objects.count() == 2 and Image.objects.count() == 2  # nothing of the refused uploads

    Study.objects.filter(pk=waiting[0].pk).update(status=Study.Status.DONE)
    ok = api.post("/api/v1/studies/", {"patient_id": patient.pk, "images": [jpeg_upload(seed=1)]}, format="multipart")
    assert ok.status_code == 202
    settings.INFERENCE_BACKLOG_LIMIT = 0  # no limit
    Study.objects.update(status=Study.Status.QUEUED)
    ok = api.post("/api/v1/studies/", {"patient_id": patient.pk, "images": [jpeg_upload(seed=2)]}, format="multipart")
    assert ok.status_code == 202
