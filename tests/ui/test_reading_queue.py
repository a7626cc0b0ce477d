"""Issue 33 in a real browser, at 1280×800 and at 390×844 (a phone): a not-analysable study is closed with
"Seen: no AI result"; the worklist is a card per study on a phone; the study's answer is on the first
screen; focus follows the work after a reading and "Next unread" opens the next study at its reading
form; one Back press after a filter change; full screen after zoom keeps the film centred; and a measured
triage of 10 studies through the reading queue (docs/clinician-guide.md quotes its figures). axe: 0
violations on each page.

No Celery worker: the studies are made by the factories.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from diagnostics.models import Acknowledgement, Feedback, Prediction, Study
from diagnostics.selectors import study_list_filter, study_list_for_user

from ..factories import ModelVersionFactory, PatientFactory, PredictionFactory, StudyFactory
from ..images import jpeg_bytes
from .conftest import ARTIFACTS
from .test_clinician_journey import log_in
from .test_clinician_pages import assert_axe_clean, assert_fits_the_screen, open_filters
from .test_film_viewer import assessed_with_heatmap, box, open_first_film

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SIZES = [pytest.param((1280, 800), id="1280x800"), pytest.param((390, 844), id="390x844")]


@pytest.fixture(params=SIZES)
def size(request, page) -> tuple[int, int]:
    page.set_viewport_size({"width": request.param[0], "height": request.param[1]})
    return request.param


def refused_study(owner: Any, patient: Any, *, films: int = 1, seed: int = 0, accession: str = "") -> Study:
    """A done study whose every film the input gate refused."""
    pictures = [(f"film-{n}.jpeg", jpeg_bytes(size=96, seed=seed + n)) for n in range(films)]
    study = StudyFactory(created_by=owner, patient=patient, accession_number=accession, films=pictures)
    model = ModelVersionFactory()
    for image in study.images.all():
        Prediction.objects.create(
            image=image, model_version=model, outcome=Prediction.Outcome.NOT_ANALYSABLE, gate_code="not_chest",
            gate_reason="The image does not look like a chest X-ray.", threshold=0.5, latency_ms=2.0,
            model_sha256=model.sha256, preprocessing_version=model.preprocessing_version, input_sha256=image.sha256,
        )  # fmt: skip
    Study.objects.filter(pk=study.pk).update(status=Study.Status.DONE)
    return study


def scored_study(owner: Any, patient: Any, *, probabilities: list[float], seed: int = 0, accession: str = "") -> Study:
    study = StudyFactory(created_by=owner, patient=patient, accession_number=accession,
                         films=[(f"film-{n}.jpeg", jpeg_bytes(size=96, seed=seed + n))
                                for n in range(len(probabilities))])  # fmt: skip
    model = ModelVersionFactory()
    for image, probability in zip(study.images.all(), probabilities, strict=True):
        PredictionFactory(image=image, model_version=model, probability=probability)
    Study.objects.filter(pk=study.pk).update(status=Study.Status.DONE)
    return study


def unread(owner: Any) -> set[int]:
    return {study.pk for study in study_list_filter(study_list_for_user(user=owner), reading="unread")}


def focused(page: Any) -> str:
    """The focused element, described: its id, name and text."""
    return page.evaluate(
        "() => { const e = document.activeElement; return [e.tagName, e.id, e.name || '', "
        "(e.textContent || '').trim().slice(0, 40)].join('|'); }"
    )


def test_a_not_analysable_study_is_closed_with_seen_no_ai_result(page, live_server, size, owner, patient):
    refused = refused_study(owner, patient, films=2, accession="ACC-REFUSED")
    later = scored_study(owner, patient, probabilities=[0.7], seed=5, accession="ACC-SCORED")
    log_in(page, live_server, owner.username)
    page.goto(live_server.url + reverse("worklist") + "?reading=unread&sort=oldest")
    table = page.locator("#worklist-table")
    expect(table.locator("tbody tr")).to_have_count(2)
    table.get_by_role("link", name=re.compile("ACC-REFUSED")).click()
    summary = page.get_by_role("region", name="Study result")
    expect(summary).to_contain_text("Not analysable")
    button = summary.get_by_role("button", name=re.compile("^Seen: no AI result"))
    expect(button).to_be_in_viewport()  # the way to close it is on the first screen, phone included
    assert_axe_clean(page, f"queue-not-analysable-{size[0]}")

    button.click()
    page.wait_for_url(re.compile(rf".*/studies/{refused.pk}/\?.*reading=unread.*#reading$"))
    expect(page.locator(".messages")).to_contain_text("2 films with no AI result")
    expect(summary).to_contain_text("Seen by a clinician: no AI result.")
    # Nothing left to read here: the keyboard is on the next unread study.
    next_unread = page.locator("[data-next-unread]")
    expect(next_unread).to_be_focused()
    expect(next_unread).to_have_attribute("href", re.compile(rf"/studies/{later.pk}/\?.*#reading$"))
    assert Acknowledgement.objects.filter(prediction__image__study=refused).count() == 2
    assert unread(owner) == {later.pk}
    page.goto(live_server.url + reverse("worklist") + "?reading=unread")
    expect(table.locator("tbody tr")).to_have_count(1)
    expect(table).not_to_contain_text("ACC-REFUSED")
    assert_axe_clean(page, f"queue-after-seen-{size[0]}")
    assert page.js_errors == [], page.js_errors


def test_a_failed_study_with_no_prediction_is_closed_with_seen_no_ai_result(page, live_server, size, owner, patient):
    reason = "No active AI model is registered."
    failed = StudyFactory(created_by=owner, patient=patient, accession_number="ACC-FAILED",
                          films=[("film.jpeg", jpeg_bytes(size=96, seed=7))])  # fmt: skip
    Study.objects.filter(pk=failed.pk).update(status=Study.Status.FAILED, failure_reason=reason)
    log_in(page, live_server, owner.username)
    page.goto(live_server.url + reverse("study_detail", args=[failed.pk]) + "?reading=unread")
    expect(page.locator("main")).to_contain_text(reason)
    summary = page.get_by_role("region", name="Study result")
    expect(summary).to_contain_text("the AI assessment failed")
    button = summary.get_by_role("button", name="Seen: no AI result for this study")
    expect(button).to_be_in_viewport()  # on the first screen, phone included
    assert_fits_the_screen(page)
    assert_axe_clean(page, f"queue-failed-{size[0]}")

    button.click()
    page.wait_for_url(re.compile(rf".*/studies/{failed.pk}/\?.*reading=unread.*#reading$"))
    expect(page.locator(".messages")).to_contain_text("you have seen this study; it has no AI result")
    expect(summary).to_contain_text(f"Seen by a clinician: no AI result. {owner.username}")
    assert Acknowledgement.objects.filter(study=failed, prediction=None).count() == 1
    assert unread(owner) == set()
    assert_axe_clean(page, f"queue-failed-seen-{size[0]}")
    assert page.js_errors == [], page.js_errors


def test_the_worklist_shows_each_study_whole_on_a_phone(page, live_server, size, owner, team):
    other = PatientFactory(team=team, created_by=owner, name="Maria Salomea Skłodowska-Curie",
                           medical_record_number="MRN-2024-000123456")  # fmt: skip
    scored_study(owner, other, probabilities=[0.93], accession="ACC-2024-0000001")
    refused_study(owner, other, seed=3)
    log_in(page, live_server, owner.username)
    region = page.get_by_role("region", name="Worklist table")
    rows = region.locator("tbody tr")
    expect(rows).to_have_count(2)
    assert_fits_the_screen(page)
    if size[0] == 390:  # a card per study: nothing to scroll sideways (a desktop's table may scroll in its region)
        scroll = region.evaluate("(r) => [r.scrollWidth, r.clientWidth]")
        assert scroll[0] <= scroll[1], scroll
    suspected = rows.filter(has_text="ACC-2024-0000001")
    suspected.scroll_into_view_if_needed()
    for cell, text in [("td.patient", "Maria Salomea"), ("td.uploaded", "UTC"), ("td.status-cell", "Done"),
                       ("td.reading", "Unread"), ("td.finding-cell", "Pneumonia suspected 93.0 %")]:  # fmt: skip
        located = suspected.locator(cell)
        expect(located).to_contain_text(text)
        expect(located).to_be_in_viewport()
        found = box(located)
        assert found["x"] >= 0 and found["x"] + found["width"] <= size[0], (cell, found)
    if size[0] == 390:  # the card holds the study's facts within the phone's width; the record number, one line
        card = box(suspected)
        assert card["width"] <= size[0] and card["height"] < 300, card
        number = box(suspected.locator(".record-number"))
        assert number["height"] < 30, number
    expect(rows.filter(has_text="Not analysable").locator("td.finding-cell")).to_contain_text("Not analysable")
    expect(region.get_by_role("columnheader", name="Patient")).to_have_count(1)
    assert_axe_clean(page, f"queue-worklist-cards-{size[0]}")
    assert page.js_errors == [], page.js_errors


def test_the_worklist_filters_fold_away_on_a_phone(page, live_server, size, owner, patient):
    """At 390x844 the filters are a closed 'Filters' disclosure, so the first study card is on the first
    screen; at 1280x800 they are open. Opening them on a phone shows every field; a filter in use is counted."""
    for number in range(3):
        scored_study(owner, patient, probabilities=[0.2 + number / 5], seed=number, accession=f"ACC-F{number}")
    log_in(page, live_server, owner.username)
    page.goto(live_server.url + reverse("worklist") + "?status=done")
    disclosure = page.locator("#worklist-filters details")
    summary = disclosure.locator("summary")
    expect(summary).to_have_text(re.compile(r"^Filters\s*\(1 in use\)$"))
    first = page.locator("#worklist-table tbody tr").first
    phone = size[0] < 640
    if phone:
        expect(disclosure).not_to_have_attribute("open", re.compile(".*"))
        expect(page.get_by_label("Status")).to_be_hidden()
        card = box(first)
        assert card["y"] + card["height"] <= size[1], card  # the whole first card on the first screen
        assert_axe_clean(page, f"queue-filters-closed-{size[0]}")
        summary.click()
    expect(disclosure).to_have_attribute("open", "")
    expect(page.get_by_label("Status")).to_be_visible()
    expect(page.get_by_label("Status")).to_have_value("done")
    page.get_by_label("Reading").select_option("unread")
    page.wait_for_url(re.compile(r".*reading=unread"))
    expect(summary).to_have_text(re.compile(r"^Filters\s*\(2 in use\)$"))
    expect(first).to_be_visible()
    assert_fits_the_screen(page)
    assert_axe_clean(page, f"queue-filters-open-{size[0]}")
    assert page.js_errors == [], page.js_errors


def test_the_study_page_gives_its_answer_on_the_first_screen(page, live_server, size, owner, patient):
    study = scored_study(owner, patient, probabilities=[0.2, 0.97], accession="ACC-FIRST-SCREEN")
    log_in(page, live_server, owner.username)
    page.goto(live_server.url + reverse("study_detail", args=[study.pk]))
    finding = page.locator(".summary-finding")
    expect(finding).to_contain_text("Pneumonia suspected on 1 of 2 assessed films")
    top = page.locator(".summary-top")
    assert box(top)["y"] + box(top)["height"] <= size[1], (box(top), size)  # answer, score and film named
    expect(top).to_contain_text("AI score 97.0 %")
    assert_fits_the_screen(page)
    assert_axe_clean(page, f"queue-study-first-screen-{size[0]}")
    assert page.js_errors == [], page.js_errors


def test_after_a_reading_focus_goes_to_the_next_film_then_to_the_next_unread_study(
    page, live_server, size, owner, patient
):
    first = scored_study(owner, patient, probabilities=[0.8, 0.1], accession="ACC-TWO-FILMS")
    second = scored_study(owner, patient, probabilities=[0.6], seed=7, accession="ACC-NEXT")
    log_in(page, live_server, owner.username)
    page.goto(live_server.url + reverse("study_detail", args=[first.pk]) + "?sort=oldest")
    film_one, film_two = (p.pk for p in Prediction.objects.filter(image__study=first).order_by("image__pk"))

    form = page.locator(f"#feedback-{film_one}")
    form.get_by_role("radio", name=re.compile("^Pneumonia")).check()
    form.get_by_role("button", name="Record my reading").focus()
    page.keyboard.press("Enter")
    expect(page.locator(f"#feedback-{film_one}")).to_contain_text("your reading was recorded")
    # Focus is in the next film's form (its first choice), and that form is on screen.
    page.wait_for_function(f"() => document.getElementById('feedback-{film_two}').contains(document.activeElement)")
    expect(page.locator(f"#feedback-{film_two} input[type=radio]").first).to_be_in_viewport()

    page.keyboard.press("Space")  # the focused choice: Normal, agreeing with the AI
    page.locator(f"#feedback-{film_two}").get_by_role("button", name="Record my reading").press("Enter")
    expect(page.locator(f"#feedback-{film_two}")).to_contain_text("your reading was recorded")
    next_unread = page.locator("[data-next-unread]")
    expect(next_unread).to_be_focused()
    assert Feedback.objects.filter(prediction__image__study=first).count() == 2

    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(rf".*/studies/{second.pk}/\?sort=oldest#reading$"))
    prediction = Prediction.objects.get(image__study=second)
    page.wait_for_function(
        f"() => document.getElementById('feedback-{prediction.pk}').contains(document.activeElement)"
    )
    expect(
        page.locator(f"#feedback-{prediction.pk}").get_by_role("button", name="Record my reading")
    ).to_be_in_viewport()
    assert_axe_clean(page, f"queue-next-unread-{size[0]}")
    assert page.js_errors == [], page.js_errors


def test_one_back_press_undoes_one_filter_change(page, live_server, size, owner, patient, team):
    scored_study(owner, patient, probabilities=[0.8], accession="ACC-ADA")
    other = PatientFactory(team=team, created_by=owner, name="Blaise Pascal", medical_record_number="MRN-B")
    scored_study(owner, other, probabilities=[0.3], seed=4, accession="ACC-BLAISE")
    log_in(page, live_server, owner.username)
    start = page.evaluate("() => history.length")
    open_filters(page)
    search = page.get_by_label("Patient name or record number")
    search.press_sequentially("Blaise")  # keyup (after a pause) asks for the list...
    page.wait_for_url(re.compile(r".*q=Blaise"))
    expect(page.locator("#worklist-table tbody tr")).to_have_count(1)
    search.press("Tab")  # ...and leaving the field fires change for the same filters: no second entry
    page.wait_for_timeout(800)
    assert page.evaluate("() => history.length") == start + 1
    page.evaluate("() => history.back()")  # one Back press
    page.wait_for_function("() => window.location.search === ''")
    expect(page.locator("#worklist-table tbody tr")).to_have_count(2)
    assert page.js_errors == [], page.js_errors


def test_full_screen_after_zoom_keeps_the_film_centred(page, live_server, size, owner, patient):
    study = assessed_with_heatmap(owner, patient)
    card = open_first_film(page, live_server, owner, study)
    for _ in range(2):
        card.get_by_role("button", name="Zoom in").click()
    card.get_by_role("button", name="Full screen").click()
    page.wait_for_function("() => document.fullscreenElement && document.fullscreenElement.id === 'viewer-area-1'")
    film, stage = box(card.locator("img.xray")), box(card.locator("[data-viewer-stage]"))
    film_centre = (film["x"] + film["width"] / 2, film["y"] + film["height"] / 2)
    stage_centre = (stage["x"] + stage["width"] / 2, stage["y"] + stage["height"] / 2)
    assert abs(film_centre[0] - stage_centre[0]) <= 2 and abs(film_centre[1] - stage_centre[1]) <= 2, (film, stage)
    # The film is drawn ("contained") in the middle of its box: as much black above it as below, none
    # on either side where it fills the stage's height.
    drawn = page.evaluate(
        """() => { const i = document.querySelector('#film-1 img.xray'), b = i.getBoundingClientRect();
                   const s = Math.min(b.width / i.naturalWidth, b.height / i.naturalHeight);
                   const top = b.top + (b.height - i.naturalHeight * s) / 2;
                   return [top, top + i.naturalHeight * s]; }"""
    )
    above, below = max(drawn[0] - stage["y"], 0), max(stage["y"] + stage["height"] - drawn[1], 0)
    assert abs(above - below) <= 2, (drawn, stage)
    assert_axe_clean(page, f"queue-fullscreen-zoomed-{size[0]}")
    page.keyboard.press("Escape")
    page.wait_for_function("() => document.fullscreenElement === null")
    assert page.js_errors == [], page.js_errors


TRIAGE_STUDIES = 10


def test_a_triage_of_ten_studies_through_the_reading_queue(page, live_server, size, owner, patient):
    """The measurement docs/clinician-guide.md quotes: ten unread studies (seven scored, three the AI could
    not read), read from the worklist through "Next unread", counting each key press or click and the
    wall-clock seconds (the server is the test's live server on this machine)."""
    for number in range(TRIAGE_STUDIES):
        if number % 3 == 2:
            refused_study(owner, patient, seed=number * 10, accession=f"ACC-T{number:02d}")
        else:
            scored_study(owner, patient, probabilities=[0.3 + number / 20], seed=number * 10,
                         accession=f"ACC-T{number:02d}")  # fmt: skip
    log_in(page, live_server, owner.username)
    page.goto(live_server.url + reverse("worklist") + "?reading=unread&sort=oldest")
    actions = 0
    started = time.monotonic()
    start = page.get_by_role("link", name=re.compile("^Read the next unread study"))
    target = start.get_attribute("href")
    start.click()  # the queue's start
    actions += 1
    page.wait_for_url(live_server.url + target)
    per_study = []
    for _ in range(TRIAGE_STUDIES):
        page.wait_for_load_state("load")
        before = actions
        study_button = page.locator("form.acknowledge-study button")
        if study_button.count():
            expect(study_button).to_be_in_viewport()
            study_button.click()  # 1: seen, no AI result
            actions += 1
            page.wait_for_url(re.compile(r".*#reading$"))
        else:
            form = page.locator("[data-reading][data-unread]").first
            expect(form).to_be_in_viewport()
            form.locator("input[type=radio]").first.check()  # 1: the reading
            form.get_by_role("button", name="Record my reading").click()  # 2: record it
            actions += 2
            expect(page.locator(".feedback .success")).to_be_visible()
        next_unread = page.locator("[data-next-unread]")
        if next_unread.count():
            expect(next_unread).to_be_focused()
            target = next_unread.get_attribute("href")
            page.keyboard.press("Enter")  # the last: on to the next unread study
            actions += 1
            page.wait_for_url(live_server.url + target)
        per_study.append(actions - before)
    seconds = time.monotonic() - started
    assert unread(owner) == set()
    assert max(per_study) <= 3, per_study
    result = {"size": f"{size[0]}x{size[1]}", "studies": TRIAGE_STUDIES, "actions": actions,
              "actions_per_study": per_study, "scrolls": 0, "seconds": round(seconds, 1)}  # fmt: skip
    (ARTIFACTS / f"triage-{size[0]}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    assert page.js_errors == [], page.js_errors


def test_admin_pages_show_tables_and_the_beat_form_runs_under_the_policy(page, live_server, size, owner, patient):
    """The prediction's and the audit event's pages show tables and rounded figures, not JSON; the periodic
    task form of django-celery-beat runs its inline script by the request's nonce (a script the policy
    refused would fail the test: conftest collects CSP messages)."""
    from diagnostics.services.audit import audit_record

    from ..factories import AdminFactory
    from .test_clinician_journey import PASSWORD

    prediction = PredictionFactory(study=StudyFactory(created_by=owner, patient=patient), probability=0.62)
    Prediction.objects.filter(pk=prediction.pk).update(threshold=0.5188876390457153, latency_ms=4.1497299999946335,
                                                       gate_measurements={"chest_score": 0.97})  # fmt: skip
    event = audit_record(action="study.listed", actor=owner, team_id=owner.team_id,
                         detail={"query": "", "page": 1, "rows": 12})  # fmt: skip
    admin = AdminFactory(is_superuser=True)
    admin.set_password(PASSWORD)
    admin.save()
    log_in(page, live_server, admin.username)
    page.goto(live_server.url + reverse("admin:diagnostics_prediction_change", args=[prediction.pk]))
    content = page.locator("#content")
    expect(content).to_contain_text("51.9 %")
    expect(content).to_contain_text("4 ms")
    expect(content).not_to_contain_text("0.5188876390457153")
    expect(content.locator("table").filter(has_text="chest score")).to_have_count(1)
    assert_fits_the_screen(page)
    assert_axe_clean(page, f"queue-admin-prediction-{size[0]}")
    page.goto(live_server.url + reverse("admin:diagnostics_auditevent_change", args=[event.pk]))
    expect(page.locator("#content")).not_to_contain_text('{"query"')
    expect(page.locator("#content table").filter(has_text="rows")).to_have_count(1)
    assert_axe_clean(page, f"queue-admin-audit-event-{size[0]}")
    page.goto(live_server.url + reverse("admin:django_celery_beat_periodictask_add"))
    # The package's script ran: it hides the crontab's raw translation row.
    expect(page.locator(".field-crontab_translation")).to_be_hidden()
    # Django's split date/time widget has no label elements (the words "Date:" and "Time:" are text):
    # the admin site names each box after its field (diagnostics/admin_widgets.py).
    expect(page.get_by_label("Start Datetime: date")).to_have_count(1)
    assert_axe_clean(page, f"queue-admin-periodic-task-{size[0]}")
    assert page.js_errors == [], page.js_errors
