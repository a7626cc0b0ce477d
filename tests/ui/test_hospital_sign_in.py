"""Signing in with the hospital's OpenID Connect provider in a real browser: the portal's login button, the
provider's own login page (a real provider in its own process: tests/integrations/sign_in/oidc_provider/),
back to the portal signed in with the role and care team the provider's groups give, and signing out of both."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from diagnostics.models import User
from tests.integrations.sign_in.provider import Provider, provider_start, provider_stop

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def hospital_provider(live_server, settings, tmp_path) -> Iterator[Provider]:
    provider = provider_start(tmp_path, [live_server.url])
    try:
        for name, value in provider.portal_settings().items():
            setattr(settings, name, value)
        yield provider
    finally:
        provider_stop(provider)


def test_a_clinician_signs_in_with_the_hospital_provider_and_out_again(page: Any, live_server, hospital_provider):
    page.goto(live_server.url + "/login/")
    expect(page.get_by_text("Use your hospital account")).to_be_visible()
    page.get_by_role("link", name="Sign in with Example Children's Hospital sign-in").click()

    page.wait_for_url(re.compile(re.escape(hospital_provider.issuer.rsplit("/o", 1)[0]) + r"/accounts/login/.*"))
    page.get_by_label("Hospital username").fill("dr.kim")
    page.get_by_label("Hospital password").fill("dr.kim-pass")
    page.get_by_role("button", name="Sign in to the hospital").click()

    page.wait_for_url(live_server.url + "/")
    expect(page.locator("form.logout")).to_contain_text("dr.kim · PICU")
    user = User.objects.get(username="dr.kim")
    assert (user.role, user.team.name) == (User.Role.CLINICIAN, "PICU")

    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(live_server.url + "/login/")
    page.goto(live_server.url + "/")
    page.wait_for_url(re.compile(r".*/login/\?next=/$"))
    # The provider's session ended too: signing in again asks for the hospital password.
    page.get_by_role("link", name="Sign in with Example Children's Hospital sign-in").click()
    expect(page.get_by_label("Hospital password")).to_be_visible()
