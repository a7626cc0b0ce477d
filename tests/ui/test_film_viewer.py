"""The film viewer and the worklist's reading column in a real browser, at desktop width and at 390 px:
zoom (buttons, keys, wheel), pan (drag, arrow keys), reset, full screen (the Fullscreen API, Esc leaves
it), mouse-drag window/level on a DICOM film, the heatmap staying on the film throughout, the patient's
previous study beside the film, and the Reading filter. axe finds no violation on any of them.

No Celery worker: studies, assessments and heatmaps are made by the factories.
"""

from __future__ import annotations

import io
import re
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.urls import reverse
from PIL import Image as PILImage
from playwright.sync_api import expect

from diagnostics.models import Prediction, Study

from ..factories import FeedbackFactory, ModelVersionFactory, PredictionFactory, StudyFactory
from ..images import chest_like_pixels, dicom_bytes, encode
from .conftest import ARTIFACTS
from .test_clinician_journey import log_in
from .test_clinician_pages import assert_axe_clean, assert_fits_the_screen, open_filters

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTHS = [pytest.param(1280, id="desktop"), pytest.param(390, id="390px")]


@pytest.fixture(params=WIDTHS)
def width(request, page) -> int:
    page.set_viewport_size({"width": request.param, "height": 900})
    return request.param


def wide_film(seed: int = 0) -> bytes:
    """A landscape film (320×240): an overlay stretched to a square, or left unscaled, would show."""
    pixels = np.asarray(PILImage.fromarray(chest_like_pixels(320, seed)).resize((320, 240)))
    return encode(pixels, "JPEG")


def heatmap_png(width: int = 320, height: int = 240) -> bytes:
    """An RGBA heatmap of the film's size: a red patch in the upper left quarter, clear elsewhere."""
    rgba = np.zeros((height, width, 4), dtype=np.uint8)
    rgba[: height // 2, : width // 2] = (220, 20, 20, 200)
    buffer = io.BytesIO()
    PILImage.fromarray(rgba, "RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


def assessed_with_heatmap(owner: Any, patient: Any, probability: float = 0.81) -> Study:
    study = StudyFactory(created_by=owner, patient=patient, films=[("wide.jpeg", wide_film())])
    prediction = PredictionFactory(study=study, model_version=ModelVersionFactory(), probability=probability,
                                   finish_study=True)  # fmt: skip
    prediction.heatmap.save("heatmap.png", ContentFile(heatmap_png()))
    return study


def box(locator: Any) -> dict[str, float]:
    found = locator.bounding_box()
    assert found is not None
    return found


def film_in_stage(viewer: Any) -> dict[str, float]:
    """Where the film is drawn, relative to its stage (the page may have scrolled in between)."""
    film, stage = box(viewer.locator("img.xray").first), box(viewer.locator("[data-viewer-stage]").first)
    return {"x": film["x"] - stage["x"], "y": film["y"] - stage["y"], "width": film["width"],
            "height": film["height"]}  # fmt: skip


def assert_overlay_on_film(card: Any) -> None:
    """The heatmap covers exactly the film, wherever zoom and pan have put it (to a pixel)."""
    film, overlay = box(card.locator("img.xray")), box(card.locator("img.heatmap-overlay"))
    for key in ("x", "y", "width", "height"):
        assert abs(film[key] - overlay[key]) <= 1, (key, film, overlay)


def wait_for_films(page: Any) -> None:
    page.wait_for_function("() => [...document.querySelectorAll('img.xray, img.heatmap-overlay')]"
                           ".every((i) => i.complete && i.naturalWidth > 0)")  # fmt: skip


def open_first_film(page: Any, live_server: Any, user: Any, study: Study) -> Any:
    """Sign in as `user`, open the study page, wait for its pictures; the first film's card."""
    log_in(page, live_server, user.username)
    page.goto(live_server.url + reverse("study_detail", args=[study.pk]))
    wait_for_films(page)
    return page.locator("#film-1")


def test_zoom_pan_and_reset_keep_the_heatmap_on_the_film(page, live_server, width, owner, patient):
    study = assessed_with_heatmap(owner, patient)
    card = open_first_film(page, live_server, owner, study)
    tools = card.get_by_role("group", name="Viewer tools for image 1")
    expect(tools).to_be_visible()
    stage = card.get_by_role("group", name="Image 1, zoom and pan")
    expect(card.locator("[data-zoom-level]")).to_have_text("Zoom 100 %")
    assert_overlay_on_film(card)
    at_rest = film_in_stage(card)
    assert at_rest["x"] == pytest.approx(0, abs=1) and at_rest["y"] == pytest.approx(0, abs=1)
    assert_axe_clean(page, f"viewer-at-rest-{width}")

    # Buttons.
    tools.get_by_role("button", name="Zoom in").click()
    expect(card.locator("[data-zoom-level]")).to_have_text("Zoom 125 %")
    zoomed = film_in_stage(card)
    assert zoomed["width"] == pytest.approx(at_rest["width"] * 1.25, abs=1)
    # About the centre: the film's middle stays in the stage's middle.
    assert zoomed["x"] + zoomed["width"] / 2 == pytest.approx(at_rest["width"] / 2, abs=1)
    assert_overlay_on_film(card)
    tools.get_by_role("button", name="Zoom out").click()
    expect(card.locator("[data-zoom-level]")).to_have_text("Zoom 100 %")

    # Keys on the focused film: + and -, arrows move a zoomed film, 0 resets.
    stage.focus()
    expect(stage).to_be_focused()
    page.keyboard.press("+")
    page.keyboard.press("+")
    expect(card.locator("[data-zoom-level]")).to_have_text("Zoom 156 %")
    before = film_in_stage(card)
    page.keyboard.press("ArrowRight")
    moved = film_in_stage(card)
    assert moved["x"] == pytest.approx(before["x"] - 40, abs=1)  # shows more of the film's right side
    assert_overlay_on_film(card)
    page.keyboard.press("-")
    expect(card.locator("[data-zoom-level]")).to_have_text("Zoom 125 %")
    page.keyboard.press("0")
    expect(card.locator("[data-zoom-level]")).to_have_text("Zoom 100 %")
    assert film_in_stage(card) == pytest.approx(at_rest, abs=1)

    # The wheel zooms about the pointer: the point of the film under it stays under it.
    stage.scroll_into_view_if_needed()
    stage_box = box(stage)
    point = (stage_box["width"] * 0.25, stage_box["height"] * 0.25)
    page.mouse.move(stage_box["x"] + point[0], stage_box["y"] + point[1])
    page.mouse.wheel(0, -400)
    page.wait_for_function("() => document.querySelector('#film-1 [data-zoom-level]').textContent !== 'Zoom 100 %'")
    assert box(stage) == pytest.approx(stage_box, abs=1)  # the page did not scroll: the wheel zoomed
    after_wheel = film_in_stage(card)
    assert after_wheel["width"] / at_rest["width"] > 1.5
    assert after_wheel["x"] + point[0] / at_rest["width"] * after_wheel["width"] == pytest.approx(point[0], abs=2)
    assert after_wheel["y"] + point[1] / at_rest["height"] * after_wheel["height"] == pytest.approx(point[1], abs=2)
    assert_overlay_on_film(card)

    # Drag pans a zoomed film; the overlay goes with it.
    centre = (stage_box["x"] + stage_box["width"] / 2, stage_box["y"] + stage_box["height"] / 2)
    page.mouse.move(*centre)
    page.mouse.down()
    page.mouse.move(centre[0] + 30, centre[1] + 20, steps=5)
    page.mouse.up()
    dragged = film_in_stage(card)
    assert (dragged["x"] - after_wheel["x"], dragged["y"] - after_wheel["y"]) == pytest.approx((30, 20), abs=1)
    assert_overlay_on_film(card)
    # It never leaves a gap: dragged far right, the film's left edge stops at the stage's.
    page.mouse.move(*centre)
    page.mouse.down()
    page.mouse.move(centre[0] + stage_box["width"] * 3, centre[1], steps=5)
    page.mouse.up()
    assert film_in_stage(card)["x"] == pytest.approx(0, abs=1)
    # The heatmap slider still works on a zoomed film, and nothing pushes the page sideways.
    card.get_by_label("Heatmap opacity").fill("80")
    assert_fits_the_screen(page)
    assert_axe_clean(page, f"viewer-zoomed-{width}")

    tools.get_by_role("button", name="Reset view").click()
    expect(card.locator("[data-zoom-level]")).to_have_text("Zoom 100 %")
    assert film_in_stage(card) == pytest.approx(at_rest, abs=1)
    assert_overlay_on_film(card)
    assert page.js_errors == [], page.js_errors


def test_full_screen_fills_the_screen_keeps_the_overlay_aligned_and_escape_leaves_it(
    page, live_server, width, owner, patient
):
    study = assessed_with_heatmap(owner, patient)
    card = open_first_film(page, live_server, owner, study)
    button = card.get_by_role("button", name="Full screen")
    before = box(card.locator("[data-viewer-stage]"))
    button.click()
    page.wait_for_function("() => document.fullscreenElement && document.fullscreenElement.id === 'viewer-area-1'")
    expect(card.get_by_role("button", name="Exit full screen")).to_be_visible()
    stage = box(card.locator("[data-viewer-stage]"))
    assert stage["height"] > before["height"]  # the film is shown larger: the stage fills the screen's height
    # The film is "contained" in the stage; the overlay with it (same box, same aspect ratio).
    assert_overlay_on_film(card)
    card.get_by_role("button", name="Zoom in").click()
    assert_overlay_on_film(card)
    page.screenshot(path=str(ARTIFACTS / f"viewer-fullscreen-{width}.png"))  # the screen, as it is seen
    assert_axe_clean(page, f"viewer-fullscreen-{width}")

    page.keyboard.press("Escape")
    page.wait_for_function("() => document.fullscreenElement === null")
    expect(card.get_by_role("button", name="Full screen")).to_be_visible()
    # F on the focused film toggles it too; the button leaves it.
    card.locator("[data-viewer-stage]").focus()
    page.keyboard.press("f")
    page.wait_for_function("() => document.fullscreenElement !== null")
    card.get_by_role("button", name="Exit full screen").click()
    page.wait_for_function("() => document.fullscreenElement === null")
    assert page.js_errors == [], page.js_errors


def preview_windows(requests: list[str]) -> list[tuple[int, int]]:
    windows = []
    for url in requests:
        query = parse_qs(urlparse(url).query)
        if "wc" in query:
            windows.append((int(query["wc"][0]), int(query["ww"][0])))
    return windows


def test_dragging_on_a_dicom_film_changes_the_window_and_asks_for_a_new_preview(
    page, live_server, width, owner, patient
):
    study = StudyFactory(created_by=owner, patient=patient, films=[("chest.dcm", dicom_bytes(size=256))])
    image = study.images.get()
    card = open_first_film(page, live_server, owner, study)
    requested: list[str] = []  # from here on: the previews the drag asks for
    preview = reverse("image_preview", args=[image.pk])
    page.on("request", lambda request: requested.append(request.url) if preview in request.url else None)
    card.get_by_label("Window / level", exact=True).check()
    centre, window_width = card.get_by_label(re.compile("^Level")), card.get_by_label(re.compile("^Window width"))
    card.locator("[data-viewer-stage]").scroll_into_view_if_needed()
    stage = box(card.locator("[data-viewer-stage]"))
    start = (stage["x"] + stage["width"] / 2, stage["y"] + stage["height"] / 2)
    page.mouse.move(*start)
    page.mouse.down()
    # Left by a fifth of the stage: a narrower window (100 -> 80); down by a tenth: a higher level (50 -> 60).
    page.mouse.move(start[0] - stage["width"] / 5, start[1] + stage["height"] / 10, steps=8)
    page.mouse.up()
    expect(window_width).to_have_value("80")
    expect(centre).to_have_value("60")
    expect(card.locator("[data-window-controls] output").first).to_have_text("60")
    page.wait_for_function(f"() => document.querySelector('#film-1 img.xray').src.endsWith('{preview}?wc=60&ww=80')")
    page.wait_for_function("() => document.querySelector('#film-1 img.xray').complete")
    assert preview_windows(requested)[-1] == (60, 80)
    # Debounced: a drag through many positions asks for few films, not one per pointer move.
    assert len(preview_windows(requested)) <= 3, requested
    assert_axe_clean(page, f"viewer-window-drag-{width}")

    # The keyboard way stays: the sliders.
    window_width.focus()
    page.keyboard.press("ArrowRight")
    expect(window_width).to_have_value("81")
    page.wait_for_function("() => document.querySelector('#film-1 img.xray').src.endsWith('wc=60&ww=81')")
    # Back to panning: a drag on a film at its own size leaves the window alone.
    card.get_by_label("Pan", exact=True).check()
    card.locator("[data-viewer-stage]").scroll_into_view_if_needed()
    stage = box(card.locator("[data-viewer-stage]"))
    start = (stage["x"] + stage["width"] / 2, stage["y"] + stage["height"] / 2)
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(start[0] + 60, start[1] + 30, steps=4)
    page.mouse.up()
    expect(window_width).to_have_value("81")
    assert page.js_errors == [], page.js_errors


def test_the_previous_study_is_shown_beside_the_film_with_its_date_and_result(
    page, live_server, width, owner, member, patient
):
    model = ModelVersionFactory()
    before = StudyFactory(created_by=owner, patient=patient, films=[("last-year.jpeg", wide_film(seed=1))])
    FeedbackFactory(prediction=PredictionFactory(study=before, model_version=model, probability=0.2, finish_study=True),
                    clinician=member)  # fmt: skip
    Study.objects.filter(pk=before.pk).update(created_at="2024-01-10T10:00:00+00:00")
    current = assessed_with_heatmap(owner, patient)
    card = open_first_film(page, live_server, owner, current)
    card.get_by_role("link", name="Compare with previous study (2024-01-10)").click()
    panel = card.get_by_role("region", name=re.compile(f"^Previous study #{before.pk}, 2024-01-10"))
    expect(panel).to_be_visible()
    expect(panel.get_by_role("heading")).to_be_focused()
    expect(panel).to_contain_text("Image 1 of 1 last-year.jpeg: No pneumonia suspected, AI score 20.0 %")
    expect(panel).to_contain_text("Clinician's reading: normal (agreed with the AI")
    wait_for_films(page)
    mine, theirs = card.locator("[data-viewer-stage]").nth(0), panel.locator("[data-viewer-stage]")
    expect(theirs.locator("img.xray")).to_have_attribute("alt", re.compile("previous study"))
    if width == 1280:  # side by side
        assert box(theirs)["x"] > box(mine)["x"] + box(mine)["width"] - 1
        assert box(theirs)["width"] == pytest.approx(box(mine)["width"], rel=0.05)
    else:  # stacked, each the width of the screen
        assert box(theirs)["y"] > box(mine)["y"] + box(mine)["height"]
        assert box(theirs)["width"] == pytest.approx(box(mine)["width"], abs=2)
    assert_fits_the_screen(page)
    assert_axe_clean(page, f"viewer-compare-{width}")

    # The same tools, each film on its own: zooming the previous one leaves this one as it is.
    panel.get_by_role("button", name="Zoom in").click()
    expect(panel.locator("[data-zoom-level]")).to_have_text("Zoom 125 %")
    expect(card.locator("[data-zoom-level]").first).to_have_text("Zoom 100 %")
    # Full screen takes both films.
    panel.get_by_role("button", name="Full screen").click()
    page.wait_for_function("() => document.fullscreenElement && document.fullscreenElement.id === 'viewer-area-1'")
    expect(panel).to_be_visible()
    assert_overlay_on_film(card.locator(".viewer").first)
    page.screenshot(path=str(ARTIFACTS / f"viewer-compare-fullscreen-{width}.png"))
    page.keyboard.press("Escape")
    page.wait_for_function("() => document.fullscreenElement === null")

    panel.get_by_role("link", name="Close the comparison").click()
    expect(panel).to_have_count(0)
    expect(card.get_by_role("link", name=re.compile("^Compare with previous study"))).to_be_focused()
    assert page.js_errors == [], page.js_errors


def test_the_worklist_says_read_or_unread_and_filters_by_it(page, live_server, width, owner, member, patient):
    model = ModelVersionFactory()
    read = StudyFactory(created_by=owner, patient=patient, seed=1, accession_number="ACC-READ")
    FeedbackFactory(prediction=PredictionFactory(study=read, model_version=model, probability=0.7, finish_study=True),
                    clinician=member)  # fmt: skip
    unread = StudyFactory(created_by=owner, patient=patient, seed=2, accession_number="ACC-UNREAD")
    PredictionFactory(study=unread, model_version=model, probability=0.4, finish_study=True)
    log_in(page, live_server, owner.username)
    table = page.get_by_role("region", name=re.compile("^Worklist table"))
    expect(table.locator("tbody tr")).to_have_count(2)
    expect(table.get_by_role("columnheader", name="Reading")).to_have_count(1)
    expect(table.locator("tbody tr", has_text="ACC-READ").locator("td.reading")).to_have_text("Read")
    expect(table.locator("tbody tr", has_text="ACC-UNREAD").locator("td.reading")).to_have_text("Unread")
    today = Prediction.objects.first().created_at.date().isoformat()  # type: ignore[union-attr]
    expect(table.locator("tbody tr").first.locator("td.acquired")).to_contain_text(today)

    open_filters(page)
    page.get_by_label("Reading").select_option("unread")
    page.wait_for_url(re.compile(r".*reading=unread"))
    expect(table.locator("tbody tr")).to_have_count(1)
    expect(table.locator("tbody tr")).to_contain_text("ACC-UNREAD")
    assert_fits_the_screen(page)
    assert_axe_clean(page, f"worklist-unread-{width}")
    page.get_by_label("Reading").select_option("read")
    page.wait_for_url(re.compile(r".*reading=read"))
    expect(table.locator("tbody tr")).to_have_count(1)
    expect(table.locator("tbody tr")).to_contain_text("ACC-READ")
    # The filter comes back with Back, and from a study's "Worklist" link.
    table.get_by_role("link", name=re.compile("ACC-READ")).click()
    page.wait_for_url(re.compile(r".*/studies/\d+/\?(.*&)?reading=read(&.*)?$"))
    page.locator('.study-nav a[data-key="w"]').click()
    expect(page.get_by_label("Reading")).to_have_value("read")
    expect(table.locator("tbody tr")).to_have_count(1)
    assert_axe_clean(page, f"worklist-read-{width}")
    assert page.js_errors == [], page.js_errors


def test_without_the_fullscreen_api_the_film_fills_the_window_and_escape_restores_it(page, live_server, owner, patient):
    """A phone's browser may lack element full screen (Safari on an iPhone): the area then fills the window."""
    page.set_viewport_size({"width": 390, "height": 800})
    page.add_init_script("Object.defineProperty(document, 'fullscreenEnabled', {get: () => false});"
                         "Element.prototype.requestFullscreen = undefined;")  # fmt: skip
    study = assessed_with_heatmap(owner, patient)
    card = open_first_film(page, live_server, owner, study)
    card.get_by_role("button", name="Full screen").click()
    area = page.locator("#viewer-area-1")
    expect(area).to_have_class(re.compile("viewer-maximised"))
    assert box(area) == pytest.approx({"x": 0, "y": 0, "width": 390, "height": 800}, abs=1)
    assert_overlay_on_film(card)
    assert_axe_clean(page, "viewer-maximised-390")
    page.keyboard.press("Escape")
    expect(area).not_to_have_class(re.compile("viewer-maximised"))
    expect(card.get_by_role("button", name="Full screen")).to_be_visible()
    assert page.js_errors == [], page.js_errors
