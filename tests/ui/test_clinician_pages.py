"""Findings on the clinician pages, checked in a real browser at desktop width and at 390 px (a phone):
sorting by a column heading, the Order menu's width, the worklist table on a narrow screen, the study
page's conclusion and film strip, an upload with a refused file, the login form after a wrong password,
the Models page for a clinician, and the admin's headings and icon. axe checks each page.

No Celery worker: the studies are made by the factories, and an upload is only queued.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from diagnostics.models import Prediction, Study

from ..factories import AdminFactory, ModelVersionFactory, PatientFactory, PredictionFactory, StudyFactory
from ..images import jpeg_bytes, png_bytes
from .conftest import ARTIFACTS, assert_accessible
from .test_clinician_journey import PASSWORD, drop_files, log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTHS = [pytest.param(1280, id="desktop"), pytest.param(390, id="390px")]


def assert_axe_clean(page: Any, name: str) -> None:
    """No axe violation at all, of any impact (assert_accessible fails on serious and critical ones)."""
    assert_accessible(page, name)
    report = json.loads((ARTIFACTS / f"axe-{name}.json").read_text())
    assert report["violations"] == [], json.dumps(report["violations"], indent=2)


def assert_fits_the_screen(page: Any) -> None:
    """Nothing pushes the page sideways (a phone would have to scroll left and right)."""
    widths = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert widths[0] <= widths[1], widths


def open_filters(page: Any) -> None:
    """On a phone the worklist's filters are behind a closed 'Filters' disclosure: open it."""
    disclosure = page.locator("#worklist-filters details")
    if not disclosure.evaluate("(details) => details.open"):
        disclosure.locator("summary").click()
    expect(disclosure).to_have_attribute("open", "")


@pytest.fixture(params=WIDTHS)
def width(request, page) -> int:
    page.set_viewport_size({"width": request.param, "height": 900})
    return request.param


def test_a_second_click_on_a_column_heading_reverses_the_order(page, live_server, width, owner, patient, team):
    other = PatientFactory(team=team, created_by=owner, name="Blaise Pascal", medical_record_number="MRN-B")
    for number, (who, probability) in enumerate([(patient, 0.2), (other, 0.9), (patient, 0.6), (other, 0.1)]):
        PredictionFactory(study=StudyFactory(created_by=owner, patient=who, seed=number), probability=probability,
                          finish_study=True)  # fmt: skip
    log_in(page, live_server, owner.username)
    heading = page.locator("#worklist-table thead th").nth(2)
    expect(heading).to_have_text(re.compile(r"^Patient"))
    expect(heading).to_have_attribute("aria-sort", "none")
    names = page.locator("#worklist-table tbody td:nth-child(3)")

    heading.get_by_role("link").click()
    expect(heading).to_have_attribute("aria-sort", "ascending")
    expect(names).to_have_text([re.compile("^Ada")] * 2 + [re.compile("^Blaise")] * 2)
    expect(page.locator("#worklist-summary")).to_contain_text("patient name a–z")
    expect(page.get_by_label("Order")).to_have_value("patient")

    heading.get_by_role("link").click()
    expect(heading).to_have_attribute("aria-sort", "descending")
    expect(names).to_have_text([re.compile("^Blaise")] * 2 + [re.compile("^Ada")] * 2)
    expect(page.get_by_label("Order")).to_have_value("patient_desc")
    assert_axe_clean(page, f"pages-worklist-sorted-{width}")

    heading.get_by_role("link").click()  # and back again
    expect(heading).to_have_attribute("aria-sort", "ascending")
    assert page.js_errors == [], page.js_errors


# Chromium draws the menu's arrow inside the select, beside the text: leave it this much room.
ARROW_ROOM_PX = 24


def test_the_order_menu_shows_each_option_whole(page, live_server, width, owner):
    log_in(page, live_server, owner.username)
    open_filters(page)
    order = page.get_by_label("Order")
    expect(order).to_be_visible()
    fit = order.evaluate(
        """(select) => {
            const style = getComputedStyle(select);
            const context = document.createElement("canvas").getContext("2d");
            context.font = `${style.fontStyle} ${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
            const texts = Array.from(select.options, (option) => option.text);
            const widest = Math.max(...texts.map((text) => context.measureText(text).width));
            const room = select.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
            return {widest, room, right: select.getBoundingClientRect().right,
                    page: document.documentElement.clientWidth};
        }"""
    )
    assert fit["widest"] <= fit["room"] - ARROW_ROOM_PX, fit
    assert fit["right"] <= fit["page"], fit  # and the menu itself is not cut by the screen's edge
    order.select_option("triage")
    expect(order).to_have_value("triage")
    assert_axe_clean(page, f"pages-worklist-filters-{width}")
    assert page.js_errors == [], page.js_errors


def test_the_worklist_table_never_pushes_the_page_sideways(page, live_server, width, owner, team):
    other = PatientFactory(team=team, created_by=owner, name="Maria Salomea Skłodowska-Curie",
                           medical_record_number="MRN-2024-000123456")  # fmt: skip
    PredictionFactory(study=StudyFactory(created_by=owner, patient=other, accession_number="ACC-2024-0000001"),
                      probability=0.8, finish_study=True)  # fmt: skip
    log_in(page, live_server, owner.username)
    region = page.get_by_role("region", name=re.compile("^Worklist table"))
    expect(region).to_be_visible()
    expect(region.locator("tbody tr")).to_have_count(1)
    assert_fits_the_screen(page)
    scroll = region.evaluate("(r) => ({scroll: r.scrollWidth, client: r.clientWidth})")
    if width == 390:  # a card per study on a phone (issue 33): nothing left to scroll sideways
        assert scroll["scroll"] <= scroll["client"], scroll
    assert_axe_clean(page, f"pages-worklist-table-{width}")
    assert page.js_errors == [], page.js_errors


FILMS = 16


def test_the_study_page_gives_its_conclusion_first_then_a_strip_of_films(page, live_server, width, owner, patient):
    names = [f"chest-{number:02d}-{'ct-slice' if number == 5 else 'ap'}.jpeg" for number in range(1, FILMS + 1)]
    study = StudyFactory(created_by=owner, patient=patient,
                         films=[(name, jpeg_bytes(size=128, seed=i)) for i, name in enumerate(names)])  # fmt: skip
    model = ModelVersionFactory()
    for number, image in enumerate(study.images.all(), start=1):
        if number == 5:
            Prediction.objects.create(
                image=image, model_version=model, outcome=Prediction.Outcome.NOT_ANALYSABLE, gate_code="dicom_modality",
                gate_reason="This is a CT image.", threshold=0.5, latency_ms=1.0, model_sha256=model.sha256,
                preprocessing_version=model.preprocessing_version, input_sha256=image.sha256,
            )  # fmt: skip
        else:
            PredictionFactory(image=image, model_version=model, probability=0.91 if number == 12 else number / 40)
    Study.objects.filter(pk=study.pk).update(status=Study.Status.DONE)

    log_in(page, live_server, owner.username)
    page.goto(live_server.url + reverse("study_detail", args=[study.pk]))
    expect(page.locator("#study-status")).to_contain_text("the AI assessment is ready")
    summary = page.get_by_role("region", name="Study result")
    expect(summary).to_contain_text("Pneumonia suspected on 1 of 15 assessed films")
    expect(summary).to_contain_text("Most suspicious film: Image 12 chest-12-ap.jpeg, AI score 91.0 %")
    expect(summary).to_contain_text("16 films: 15 assessed, 1 not analysable.")
    expect(summary).to_contain_text("Image 5 chest-05-ct-slice.jpeg: This is a CT image.")
    # The conclusion is on the first screen, above the strip; the strip comes before the first film's card.
    assert summary.bounding_box()["y"] < 900
    strip = page.get_by_role("navigation", name="Films of this study")
    thumbs = strip.get_by_role("link")
    expect(thumbs).to_have_count(FILMS)
    expect(thumbs.nth(11)).to_have_accessible_name(re.compile(r"^Image 12 chest-12-ap\.jpeg Suspected 91\.0 %"))
    expect(thumbs.nth(4)).to_have_accessible_name(re.compile("Not analysable"))
    assert strip.bounding_box()["y"] < page.locator("#film-1").bounding_box()["y"]
    page.wait_for_function("() => [...document.querySelectorAll('.film-strip img')].every((i) => i.complete && "
                           "i.naturalWidth > 0)")  # fmt: skip
    assert_fits_the_screen(page)
    assert_axe_clean(page, f"pages-study-conclusion-{width}")

    # From the keyboard: to the 12th thumbnail, Enter, and the film's card is on screen.
    thumbs.nth(11).focus()
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*#film-12$"))
    expect(page.locator("#film-12")).to_be_in_viewport()
    expect(page.locator("#film-12 h2")).to_contain_text("chest-12-ap.jpeg")
    assert page.js_errors == [], page.js_errors


def _posts_to(page: Any, url: str) -> list[str]:
    sent: list[str] = []
    page.on("request", lambda request: sent.append(request.url) if request.method == "POST" and url in request.url
            else None)  # fmt: skip
    return sent


def test_a_refused_file_stops_the_upload_and_each_file_is_named(page, live_server, width, owner, patient):
    log_in(page, live_server, owner.username)
    url = reverse("study_new", args=[patient.pk])
    page.goto(live_server.url + url)
    sent = _posts_to(page, url)
    drop_files(
        page,
        "[data-dropzone]",
        [
            ("chest.jpeg", "image/jpeg", jpeg_bytes(size=320, seed=4)),
            ("letter.png", "image/png", b"this is not a picture"),
        ],
    )
    file_list = page.locator("[data-file-list]")
    expect(file_list).to_contain_text("letter.png: refused. This file is not a JPEG, PNG or DICOM image.")
    page.get_by_role("button", name="Upload and assess").click()

    summary = page.locator("#upload-errors")
    expect(summary).to_be_focused()
    expect(summary).to_contain_text("The study was not uploaded")
    expect(summary).to_contain_text("letter.png: This file is not a JPEG, PNG or DICOM image.")
    expect(summary).to_contain_text("chest.jpeg: accepted, not uploaded yet.")
    expect(file_list).to_contain_text(re.compile(r"chest\.jpeg \(JPEG, \d+ kB\): accepted, not uploaded yet\."))
    assert sent == [] and not Study.objects.exists()  # nothing left the browser
    assert_axe_clean(page, f"pages-upload-refused-here-{width}")
    assert_fits_the_screen(page)

    # Remove the refused file and send the rest.
    page.get_by_role("button", name="Remove letter.png").click()
    page.get_by_role("button", name="Upload and assess").click()
    page.wait_for_url(re.compile(r".*/studies/\d+/$"))
    study = Study.objects.get()
    assert [image.original_filename for image in study.images.all()] == ["chest.jpeg"]
    assert page.js_errors == [], page.js_errors


def test_a_file_the_server_refuses_comes_back_marked_with_the_others_ready_to_resend(
    page, live_server, width, owner, patient
):
    log_in(page, live_server, owner.username)
    page.goto(live_server.url + reverse("study_new", args=[patient.pk]))
    # The browser only sniffs the first bytes: the server decodes the whole file and refuses it.
    page.get_by_label("Choose files").set_input_files(
        [
            {"name": "chest.jpeg", "mimeType": "image/jpeg", "buffer": jpeg_bytes(size=320, seed=4)},
            {"name": "broken.png", "mimeType": "image/png", "buffer": png_bytes(size=64)[:60]},
        ]
    )
    expect(page.get_by_text("broken.png (PNG")).to_be_visible()
    page.get_by_role("button", name="Upload and assess").click()

    summary = page.locator("#upload-errors")
    expect(summary).to_be_focused()
    expect(summary).to_contain_text("broken.png: The image is truncated or corrupt.")
    expect(summary).to_contain_text("chest.jpeg: accepted, not uploaded yet.")
    assert not Study.objects.exists()
    # The files are back in the form, each as the server judged it.
    file_list = page.locator("[data-file-list]")
    expect(file_list).to_contain_text("broken.png: refused. The image is truncated or corrupt.")
    expect(file_list).to_contain_text(re.compile(r"chest\.jpeg \(JPEG, \d+ kB\): accepted, not uploaded yet\."))
    assert_axe_clean(page, f"pages-upload-refused-by-server-{width}")
    assert_fits_the_screen(page)

    page.get_by_role("button", name="Remove broken.png").click()
    page.get_by_role("button", name="Upload and assess").click()
    page.wait_for_url(re.compile(r".*/studies/\d+/$"))
    assert [image.original_filename for image in Study.objects.get().images.all()] == ["chest.jpeg"]
    assert page.js_errors == [], page.js_errors


def test_a_wrong_password_keeps_the_username(page, live_server, width, owner):
    page.goto(live_server.url + reverse("login"))
    page.get_by_label("Username").fill(owner.username)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_be_visible()
    expect(page.get_by_label("Username")).to_have_value(owner.username)
    expect(page.get_by_label("Password")).to_have_value("")
    expect(page.get_by_label("Password")).to_be_focused()
    assert_axe_clean(page, f"pages-login-failed-{width}")
    assert_fits_the_screen(page)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r".*/$"))
    expect(page.get_by_role("heading", name="Worklist")).to_be_visible()
    assert page.js_errors == [], page.js_errors


def test_a_clinician_opening_the_models_page_is_told_it_is_for_administrators(page, live_server, width, owner):
    log_in(page, live_server, owner.username)
    response = page.goto(live_server.url + reverse("model_list"))
    assert response is not None and response.status == 403
    expect(page.get_by_role("heading", level=1)).to_have_text("Models: for administrators only")
    expect(page.locator("main")).to_contain_text("is for the portal's administrators")
    assert_axe_clean(page, f"pages-models-forbidden-{width}")
    assert_fits_the_screen(page)
    assert page.js_errors == [], page.js_errors


def test_admin_pages_show_one_heading_and_the_portal_icon(page, live_server, width, team):
    admin = AdminFactory(username="ada-root", team=team, is_superuser=True)
    log_in(page, live_server, admin.username)
    page.goto(live_server.url + reverse("admin:diagnostics_trainingrun_add"))
    expect(page.get_by_role("heading", name="Start a training run")).to_have_count(1)
    assert_axe_clean(page, f"pages-admin-training-start-{width}")
    page.goto(live_server.url + reverse("admin:index"))
    expect(page.get_by_role("link", name="Webhook deliveries")).to_be_visible()
    # The linked icon loads under the Content-Security-Policy (a blocked load fails the test, conftest).
    icon = page.locator('link[rel="icon"]')
    expect(icon).to_have_attribute("href", "/static/diagnostics/favicon.svg")
    loaded = page.evaluate(
        """(href) => new Promise((resolve) => {
            const img = new Image();
            img.onload = () => resolve(img.naturalWidth > 0);
            img.onerror = () => resolve(false);
            img.src = href;
        })""",
        icon.get_attribute("href"),
    )
    assert loaded
    assert page.request.get(live_server.url + "/favicon.ico").ok  # followed to the same icon
    assert page.js_errors == [], page.js_errors
