"""A clinician's day in a real browser: log in, upload, watch the result arrive, read the heatmap,
give feedback, export the PDF; an administrator reads the model page. axe checks every page.

Runs against the live test server and a real Celery worker (inference, heatmaps included) on the
test database; screenshots and axe reports are saved under test-artifacts/ui/.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from diagnostics.formatting.numbers import score_percent
from diagnostics.models import AuditEvent, Feedback, Prediction, Study
from diagnostics.services.feedback import feedback_record

from ..factories import AdminFactory, PredictionFactory, StudyFactory
from ..images import chest_like_pixels, dicom_bytes, jpeg_bytes, png_bytes
from .conftest import ARTIFACTS, assert_accessible, screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery"


def log_in(page: Any, live_server: Any, username: str) -> None:
    """Sign in on the login page; an administrator then types the code of their authenticator app."""
    from diagnostics.integrations.sign_in.two_factor import two_factor_required
    from diagnostics.models import User
    from tests.two_factor import authenticator_code, authenticator_for

    user = User.objects.get(username=username)
    device = authenticator_for(user) if two_factor_required(user) else None
    page.goto(live_server.url + reverse("login"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    if device is not None:
        page.wait_for_url(re.compile(r".*/account/two-factor/verify/.*"))
        page.get_by_label("Code").fill(authenticator_code(device))
        page.get_by_role("button", name="Verify").click()
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
    """A real chest film as 12-bit DICOM (the input gate refuses drawn imitations)."""
    import numpy as np

    pixels = chest_like_pixels(256, seed=1).astype(np.uint16) * 16
    return dicom_bytes(pixels, window=(2048, 4096))


def test_clinician_uploads_follows_the_live_result_reads_the_heatmap_gives_feedback_and_exports_the_pdf(
    page, live_server, owner, patient, active_model, celery_worker
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
    # Every assertion on what the page's scripts write waits for it (expect retries until its timeout):
    # a check that reads the DOM once races the script and fails now and then on a busy machine.
    expect(file_list).to_contain_text("chest.jpeg (JPEG")
    expect(file_list).to_contain_text("letter.png: refused. This file is not a JPEG, PNG or DICOM image.")
    # The DICOM header is read back by the server and offered for the study.
    metadata = page.locator("#dicom-metadata")
    expect(metadata).to_contain_text("What the DICOM files say")
    expect(metadata).to_contain_text("TEST-001")
    expect(metadata).to_contain_text("differs from this patient's record number")
    expect(metadata).to_contain_text("2 Jan 2024")
    assert_accessible(page, "02-upload-with-files")
    page.get_by_role("button", name=re.compile("Use view PA and modality CR")).click()
    expect(page.get_by_label("View position")).to_have_value("PA")
    # A study goes up whole or not at all (tests/ui/test_clinician_pages.py): take the refused file off first.
    page.get_by_role("button", name="Remove letter.png").click()
    expect(file_list).not_to_contain_text("letter.png")
    page.get_by_label("Accession number (optional)").fill("ACC-UI-1")
    progress = page.locator("[data-upload-progress]")
    expect(progress).to_be_hidden()
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
    expect(status).to_contain_text("the AI assessment is ready", timeout=120_000)
    assert page.evaluate("() => window.__sameDocument === true"), "the page reloaded instead of updating in place"
    expect(status).to_have_attribute("role", "status")

    predictions = list(Prediction.objects.filter(image__study=study).order_by("image_id"))
    assert len(predictions) == 2
    first = page.locator(".image-result").first
    expect(first.locator(".finding-text")).to_have_text(
        re.compile(r"^\s*(Pneumonia suspected|No pneumonia suspected)\s*$")
    )
    # The score and its threshold as the formatting owner writes them, each beside the other.
    expect(first.locator(".finding-explainer")).to_contain_text(
        f"is {score_percent(predictions[0].probability, predictions[0].threshold)}, "
    )
    expect(first.locator(".finding-explainer")).to_contain_text(
        f"decision threshold of {score_percent(predictions[0].threshold, predictions[0].probability)}."
    )
    expect(first).to_contain_text(active_model.name)

    # The heatmaps came with the result, from the same model call: no reload, no second wait.
    overlay = first.locator("img.heatmap-overlay")
    expect(overlay).to_be_visible()
    expect(page.locator(".image-result").nth(1).locator("img.heatmap-overlay")).to_be_visible()
    assert page.evaluate("() => window.__sameDocument === true")
    # Visible is not loaded: wait for the picture itself.
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=overlay.element_handle())
    assert all(p.heatmap for p in Prediction.objects.filter(image__study=study))
    # TensorFlow is not in the inference worker's memory: the heatmap is an output of the ONNX model.
    assert not maps_tensorflow(celery_worker)
    opacity = first.get_by_label("Heatmap opacity")
    opacity.fill("80")
    expect(overlay).to_have_css("opacity", "0.8")
    assert_accessible(page, "04-study-result-heatmap")

    # H hides and shows the overlay; with shortcuts switched off it does nothing.
    page.locator("body").press("h")
    expect(overlay).to_have_css("visibility", "hidden")
    page.locator("body").press("h")
    expect(overlay).to_have_css("visibility", "visible")

    # Window/level on the DICOM film re-renders it through the chosen window.
    dicom_result = page.locator(".image-result").nth(1)
    xray = dicom_result.locator("img.xray")
    with page.expect_response(re.compile(r".*/preview\.png\?wc=30&ww=20")) as windowed:
        dicom_result.get_by_label("Window width (% of the film's range)").fill("20")
        dicom_result.get_by_label("Level (window centre, % of the film's range)").fill("30")
    assert windowed.value.status == 200
    expect(xray).to_have_attribute("src", re.compile(r"wc=30"))
    screenshot(page, "05-dicom-windowed")

    # Feedback: correct the AI's label, with a comment.
    feedback = first.locator(".feedback")
    corrected = "Normal" if predictions[0].label == Prediction.Label.PNEUMONIA else "Pneumonia"
    feedback.get_by_role("radio", name=re.compile(f"^{corrected}")).check()
    feedback.get_by_label("Comment (optional)").fill("Film rotated; reviewed by a consultant.")
    feedback.get_by_role("button", name="Record my reading").click()
    expect(page.locator(".feedback .success").first).to_be_visible()
    expect(page.locator(".feedback").first).to_contain_text("you corrected the AI")
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
    page.wait_for_function("() => document.activeElement && document.activeElement.hasAttribute('data-row-link')")
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
    expect(page.get_by_text("broken.png (PNG")).to_be_visible()
    page.get_by_role("button", name="Upload and assess").click()
    summary = page.locator("#upload-errors")
    expect(summary).to_contain_text("broken.png: The image is truncated or corrupt.")
    expect(summary).to_be_focused()  # portal.js moves focus there after the swap: wait for it
    assert not Study.objects.exists()
    assert_accessible(page, "08-upload-refused")

    # Registering a patient with a birth date in the future: the error is announced and named.
    page.goto(live_server.url + reverse("patient_new"))
    page.get_by_label("Medical record number").fill("MRN-NEW-1")
    page.get_by_label("Name").fill("Grace Hopper")
    page.get_by_label("Birth date").fill("2999-01-01")
    page.get_by_role("button", name="Register").click()
    expect(page.get_by_role("alert")).to_contain_text("The birth date cannot be in the future.")
    assert_accessible(page, "09-patient-form-error")

    page.goto(live_server.url + reverse("patient_detail", args=[patient.pk]))
    assert_accessible(page, "09-patient")
    page.goto(live_server.url + reverse("patient_list"))
    assert_accessible(page, "10-patients")

    # Some live use for the model page: three predictions, two readings of which one overrides the AI.
    for probability, agrees in ((0.92, True), (0.15, False), (0.55, None)):
        prediction = PredictionFactory(
            study=StudyFactory(created_by=owner, patient=patient),
            model_version=active_model,
            probability=probability,
            finish_study=True,
        )
        if agrees is not None:
            feedback_record(
                user=owner,
                prediction=prediction,
                agrees=agrees,
                confirmed_label=None if agrees else flip(prediction.label),
            )
    admin = AdminFactory(username="ada-admin", team=team)
    page.context.clear_cookies()
    page.goto(live_server.url + reverse("login"))
    assert_accessible(page, "00-login")
    log_in(page, live_server, admin.username)
    page.get_by_role("link", name="Models").click()
    assert_accessible(page, "11-models")
    page.get_by_role("link", name=active_model.name).click()
    expect(page.get_by_role("heading", name="Validation", exact=False).first).to_be_visible()
    in_use = page.locator("section[aria-labelledby=live-heading]")
    expect(in_use).to_contain_text("50.0 % (1 of 2 readings corrected the AI)")
    expect(in_use).to_contain_text("Distribution of live probabilities")
    assert_accessible(page, "12-model-detail")
    assert page.js_errors == [], page.js_errors


def test_back_after_filtering_the_worklist_shows_the_whole_worklist_page(
    page, live_server, owner, patient, active_model
):
    """htmx answers the filter with a fragment of the worklist's own URL; Back from a study must show the
    whole page again (header, filters, table), not the fragment from a cache (no-store, Vary: HX-Request)."""
    suspected = PredictionFactory(
        study=StudyFactory(created_by=owner, patient=patient, accession_number="ACC-HIGH"),
        model_version=active_model,
        probability=0.95,
        finish_study=True,
    )
    PredictionFactory(
        study=StudyFactory(created_by=owner, patient=patient, seed=1, accession_number="ACC-LOW"),
        model_version=active_model,
        probability=0.01,
        finish_study=True,
    )
    log_in(page, live_server, owner.username)
    page.goto(live_server.url + reverse("worklist"))
    page.get_by_label("AI assessment").select_option("suspected")
    page.wait_for_url(re.compile(r".*suspicion=suspected.*"))
    table = page.locator("#worklist-table")
    expect(table).not_to_contain_text("ACC-LOW")
    table.get_by_role("link", name=re.compile("ACC-HIGH")).click()
    page.wait_for_url(re.compile(rf".*/studies/{suspected.image.study_id}/.*"))
    page.go_back()
    page.wait_for_url(re.compile(r".*suspicion=suspected.*"))
    expect(page.get_by_role("heading", name="Worklist")).to_be_visible()
    expect(page.get_by_role("search", name="Filter the worklist")).to_be_visible()
    expect(page.get_by_role("navigation").first).to_be_visible()
    expect(page.locator("#worklist-table")).to_contain_text("ACC-HIGH")
    expect(page.locator("#worklist-table")).not_to_contain_text("ACC-LOW")
    assert page.js_errors == [], page.js_errors
