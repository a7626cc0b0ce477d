"""A clinician's day in a real browser: log in, upload, watch the result arrive, read the heatmap,
give feedback, export the PDF; an administrator reads the model page. axe checks every page.

Runs against the live test server and two real Celery workers (inference and explain) on the
test database; screenshots and axe reports are saved under test-artifacts/ui/.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse

from diagnostics.models import AuditEvent, Feedback, Prediction, Study, User
from diagnostics.services.feedback import feedback_record

from ..factories import UserFactory
from ..images import jpeg_bytes, png_bytes
from ..ml.conftest import dicom_bytes
from ..test_pages import make_study, predict
from .conftest import ARTIFACTS, assert_accessible, screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery"


def log_in(page: Any, live_server: Any, username: str) -> None:
    page.goto(live_server.url + reverse("login"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r".*/$"))


def drop_files(page: Any, selector: str, files: list[tuple[str, str, bytes]]) -> None:
    """Drag files onto an element, as a clinician dragging them from the desktop would."""
    transfer = page.evaluate_handle(
        """(files) => {
            const transfer = new DataTransfer();
            for (const [name, type, bytes] of files) {
                transfer.items.add(new File([new Uint8Array(bytes)], name, {type}));
            }
            return transfer;
        }""",
        [[name, mime, list(data)] for name, mime, data in files],
    )
    for event in ("dragenter", "dragover", "drop"):
        page.dispatch_event(selector, event, {"dataTransfer": transfer})


def maps_tensorflow(worker: Any) -> bool:
    """Whether a worker process has TensorFlow's shared libraries mapped (Linux /proc)."""
    return "tensorflow" in Path(f"/proc/{worker.process.pid}/maps").read_text()


def flip(label: str) -> str:
    return Prediction.Label.NORMAL if label == Prediction.Label.PNEUMONIA else Prediction.Label.PNEUMONIA


def dicom_film() -> bytes:
    import numpy as np

    pixels = np.zeros((96, 96), dtype=np.uint16) + 300
    pixels[20:76, 10:40] = 2400
    pixels[20:76, 56:86] = 2400
    return dicom_bytes(pixels, window=(1500, 3000))


def test_clinician_uploads_follows_the_live_result_reads_the_heatmap_gives_feedback_and_exports_the_pdf(
    page, live_server, owner, patient, active_model, celery_worker, explain_worker
):
    log_in(page, live_server, owner.username)
    assert page.get_by_role("heading", name="Worklist").is_visible()
    assert_accessible(page, "01-worklist-empty")

    # Upload: drag two films (JPEG and DICOM) and one file that is not an X-ray.
    page.goto(live_server.url + reverse("study_new", args=[patient.pk]))
    drop_files(
        page,
        "[data-dropzone]",
        [
            ("chest.jpeg", "image/jpeg", jpeg_bytes(size=320, seed=4)),
            ("film.dcm", "application/dicom", dicom_film()),
            ("letter.png", "image/png", b"this is not a picture"),
        ],
    )
    file_list = page.locator("[data-file-list]")
    file_list.get_by_text("chest.jpeg (JPEG").wait_for()
    assert "letter.png: refused, this file is not a JPEG, PNG or DICOM image." in file_list.inner_text()
    # The DICOM header is read back by the server and offered for the study.
    metadata = page.locator("#dicom-metadata")
    metadata.get_by_text("What the DICOM files say").wait_for()
    assert "TEST-001" in metadata.inner_text() and "differs from this patient's record number" in metadata.inner_text()
    assert "2024-01-02" in metadata.inner_text()
    assert_accessible(page, "02-upload-with-files")
    page.get_by_role("button", name=re.compile("Use view PA and modality CR")).click()
    assert page.get_by_label("View position").input_value() == "PA"
    page.get_by_label("Accession number (optional)").fill("ACC-UI-1")
    progress = page.locator("[data-upload-progress]")
    assert progress.is_hidden()
    # Report what the progress bar shows while the files go up (the page is left right after).
    page.evaluate(
        """() => document.addEventListener("htmx:xhr:progress", () => console.log(
            "progress " + document.getElementById("upload-progress-bar").value))"""
    )
    with page.expect_console_message(lambda message: message.text == "progress 100"):
        page.get_by_role("button", name="Upload and assess").click()

    # The study page: the status changes from queued to done without a reload.
    page.wait_for_url(re.compile(r".*/studies/\d+/$"))
    study = Study.objects.get(accession_number="ACC-UI-1")
    assert study.images.count() == 2 and study.view_position == "PA"
    assert page.locator("progress").count() == 0  # the form was replaced by the study page
    screenshot(page, "03-study-queued")
    page.evaluate("() => { window.__sameDocument = true; }")
    status = page.locator("#study-status")
    status.get_by_text("the AI assessment is ready").wait_for(timeout=120_000)
    assert page.evaluate("() => window.__sameDocument === true"), "the page reloaded instead of updating in place"
    assert status.get_attribute("role") == "status"

    predictions = list(Prediction.objects.filter(image__study=study).order_by("image_id"))
    assert len(predictions) == 2
    first = page.locator(".image-result").first
    finding = first.locator(".finding-text").inner_text()
    assert finding.strip() in ("Pneumonia suspected", "No pneumonia suspected")
    assert f"{predictions[0].probability:.3f}" in first.inner_text() and active_model.name in first.inner_text()

    # The heatmaps arrive from the explain worker, again without a reload.
    overlay = first.locator("img.heatmap-overlay")
    overlay.wait_for(state="visible", timeout=150_000)  # TensorFlow loads on the first task
    page.locator(".image-result").nth(1).locator("img.heatmap-overlay").wait_for(state="visible", timeout=60_000)
    assert page.evaluate("() => window.__sameDocument === true")
    assert overlay.evaluate("img => img.complete && img.naturalWidth > 0")
    assert all(p.heatmap for p in Prediction.objects.filter(image__study=study))
    # TensorFlow is in the explain worker's memory, and not in the inference worker's.
    assert maps_tensorflow(explain_worker) and not maps_tensorflow(celery_worker)
    opacity = first.get_by_label("Heatmap opacity")
    opacity.fill("80")
    assert overlay.evaluate("img => getComputedStyle(img).opacity") == "0.8"
    assert_accessible(page, "04-study-result-heatmap")

    # H hides and shows the overlay; with shortcuts switched off it does nothing.
    page.locator("body").press("h")
    assert overlay.evaluate("img => getComputedStyle(img).visibility") == "hidden"
    page.locator("body").press("h")
    assert overlay.evaluate("img => getComputedStyle(img).visibility") == "visible"

    # Window/level on the DICOM film re-renders it through the chosen window.
    dicom_result = page.locator(".image-result").nth(1)
    xray = dicom_result.locator("img.xray")
    with page.expect_response(re.compile(r".*/preview\.png\?wc=30&ww=20")) as windowed:
        dicom_result.get_by_label("Window width (% of the film's range)").fill("20")
        dicom_result.get_by_label("Level (window centre, % of the film's range)").fill("30")
    assert windowed.value.status == 200
    assert "wc=30" in xray.get_attribute("src")
    screenshot(page, "05-dicom-windowed")

    # Feedback: correct the AI's label, with a comment.
    feedback = first.locator(".feedback")
    corrected = "Normal" if predictions[0].label == Prediction.Label.PNEUMONIA else "Pneumonia"
    feedback.get_by_role("radio", name=re.compile(f"^{corrected}")).check()
    feedback.get_by_label("Comment (optional)").fill("Film rotated; reviewed by a consultant.")
    feedback.get_by_role("button", name="Record my reading").click()
    page.locator(".feedback .success").first.wait_for()
    assert "you corrected the AI" in page.locator(".feedback").first.inner_text()
    verdict = Feedback.objects.get()
    assert verdict.agrees is False and verdict.clinician == owner and verdict.prediction == predictions[0]
    assert_accessible(page, "06-feedback-recorded")

    # The PDF report downloads and its export is audited.
    with page.expect_download() as download:
        page.get_by_role("link", name="Download PDF report").click()
    pdf_path = ARTIFACTS / "study-report.pdf"
    download.value.save_as(pdf_path)
    assert pdf_path.read_bytes().startswith(b"%PDF")
    assert AuditEvent.objects.filter(action="study.report_exported", object_id=str(study.pk), actor=owner).exists()

    # Keyboard: J on the worklist moves to the first study, Enter opens it.
    page.goto(live_server.url + reverse("worklist"))
    page.locator("body").press("j")
    assert page.evaluate("() => document.activeElement.hasAttribute('data-row-link')")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(rf".*/studies/{study.pk}/$"))
    page.goto(live_server.url + reverse("worklist"))
    assert_accessible(page, "07-worklist")
    assert page.js_errors == [], page.js_errors


def test_a_refused_upload_says_why_and_the_patient_and_model_pages_pass_axe(
    page, live_server, owner, patient, team, active_model
):
    log_in(page, live_server, owner.username)
    page.goto(live_server.url + reverse("study_new", args=[patient.pk]))
    # Through the file picker this time; a PNG the server refuses only after decoding (truncated).
    broken = png_bytes(size=64)[:60]
    page.get_by_label("Choose files").set_input_files(
        [{"name": "broken.png", "mimeType": "image/png", "buffer": broken}]
    )
    page.get_by_text("broken.png (PNG").wait_for()
    page.get_by_role("button", name="Upload and assess").click()
    summary = page.locator("#upload-errors")
    summary.wait_for()
    assert "broken.png: The image is truncated or corrupt." in summary.inner_text()
    assert page.evaluate("() => document.activeElement.id") == "upload-errors"
    assert not Study.objects.exists()
    assert_accessible(page, "08-upload-refused")

    # Registering a patient with a birth date in the future: the error is announced and named.
    page.goto(live_server.url + reverse("patient_new"))
    page.get_by_label("Medical record number").fill("MRN-NEW-1")
    page.get_by_label("Name").fill("Grace Hopper")
    page.get_by_label("Birth date").fill("2999-01-01")
    page.get_by_role("button", name="Register").click()
    page.get_by_role("alert").get_by_text("The birth date cannot be in the future.").wait_for()
    assert_accessible(page, "09-patient-form-error")

    page.goto(live_server.url + reverse("patient_detail", args=[patient.pk]))
    assert_accessible(page, "09-patient")
    page.goto(live_server.url + reverse("patient_list"))
    assert_accessible(page, "10-patients")

    # Some live use for the model page: three predictions, two readings of which one overrides the AI.
    for probability, agrees in ((0.92, True), (0.15, False), (0.55, None)):
        prediction = predict(make_study(owner, patient), active_model, probability)
        if agrees is not None:
            feedback_record(
                user=owner,
                prediction=prediction,
                agrees=agrees,
                confirmed_label=None if agrees else flip(prediction.label),
            )
    admin = UserFactory(username="ada-admin", role=User.Role.ADMIN, team=team, is_staff=True)
    page.context.clear_cookies()
    page.goto(live_server.url + reverse("login"))
    assert_accessible(page, "00-login")
    log_in(page, live_server, admin.username)
    page.get_by_role("link", name="Models").click()
    assert_accessible(page, "11-models")
    page.get_by_role("link", name=active_model.name).click()
    page.get_by_role("heading", name="Validation", exact=False).first.wait_for()
    in_use = page.locator("section[aria-labelledby=live-heading]").inner_text()
    assert "50.0 % (1 of 2 readings corrected the AI)" in in_use
    assert "Distribution of live probabilities" in in_use
    assert_accessible(page, "12-model-detail")
    assert page.js_errors == [], page.js_errors
