"""Browser fixtures: Debian's headless Chromium driven by Playwright, axe-core, screenshots, two workers.

Chromium comes from Debian (`make test-deps` installs chromium and chromium-driver); Playwright
never downloads a browser of its own. Screenshots and axe reports go to test-artifacts/ui/.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from ..conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "ui"
AXE_JS = Path(__file__).resolve().parent / "vendor" / "axe-4.14.1.min.js"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
# axe impacts that fail a test; "moderate" and "minor" ones are written to the report only.
BLOCKING_IMPACTS = ("serious", "critical")


@pytest.fixture
def browser(monkeypatch) -> Iterator[Any]:
    """One Chromium per test (a second to start). Function-scoped so the flag below lasts only as long."""
    require_tool(shutil.which(CHROMIUM) or Path(CHROMIUM).is_file(), f"Chromium ({CHROMIUM})")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread, which makes Django refuse ORM calls
    # "from an async context"; the calls the test makes between browser steps are synchronous and safe.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
            # While Playwright's loop runs, the ORM works on a connection of its own (Django's
            # connections are context-local); close it here, or it holds the test database open.
            from django.db import connections

            connections.close_all()


@pytest.fixture(scope="session")
def live_server(django_db_setup) -> Iterator[Any]:
    """pytest-django's live server, started with a MEDIA_URL its media handler can parse.

    Django's live server wraps the app in a handler for MEDIA_URL, which the portal leaves unset
    (uploads are served only by access-checked views). A URL on another host is never matched, so
    the test server serves no media either. It depends on django_db_setup so that it stops, and
    lets go of its connections, before the test database is dropped.
    """
    from django.test.utils import override_settings
    from pytest_django.live_server_helper import LiveServer

    with override_settings(MEDIA_URL="http://media.invalid/"):
        server = LiveServer(os.getenv("DJANGO_LIVE_TEST_SERVER_ADDRESS") or "localhost")
    yield server
    server.stop()


@pytest.fixture
def page(browser, live_server) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True, locale="en-GB")
    context.set_default_timeout(30_000)  # generous: the machine may be busy
    expect.set_options(timeout=30_000)  # the same for the auto-waiting assertions (default 5 s)
    page = context.new_page()
    # Script errors, and answers that mean a broken page (a 400 for a refused upload is expected).
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"script error: {error}"))
    # Anything the Content-Security-Policy blocked is a page that does not work as written.
    page.on(
        "console",
        lambda message: errors.append(f"CSP: {message.text}") if "Content Security Policy" in message.text else None,
    )
    page.on(
        "response",
        lambda response: (
            errors.append(f"{response.status} {response.url}")
            if response.status == 404 or response.status >= 500
            else None
        ),
    )
    page.js_errors = errors
    yield page
    context.close()


def screenshot(page: Any, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def run_axe(page: Any, name: str) -> list[dict[str, Any]]:
    """Run axe-core on the page as it is now; save the report; return the serious and critical violations."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        # Through DevTools, not a <script> tag: the portal's CSP (rightly) refuses inline scripts.
        page.evaluate(AXE_JS.read_text(encoding="utf-8"))
    results = page.evaluate(
        """async () => {
            const r = await axe.run(document, {resultTypes: ["violations"]});
            return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                           nodes: v.nodes.map(n => n.target.join(" ")).slice(0, 10)}));
        }"""
    )
    (ARTIFACTS / f"axe-{name}.json").write_text(json.dumps({"url": page.url, "violations": results}, indent=2))
    return [violation for violation in results if violation["impact"] in BLOCKING_IMPACTS]


def assert_accessible(page: Any, name: str) -> None:
    blocking = run_axe(page, name)
    assert not blocking, f"axe found serious/critical violations on {name} ({page.url}):\n" + json.dumps(
        blocking, indent=2
    )
    screenshot(page, name)
