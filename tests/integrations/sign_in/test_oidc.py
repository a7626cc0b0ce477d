"""Sign-in through a real OpenID Connect provider (django-oauth-toolkit, its own process and database:
oidc_provider/): the authorization-code flow with PKCE, state, nonce, the ID token's signature and
audience, claims to role and care team, and sign-out at the provider too."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urljoin, urlsplit

import jwt
import pytest
import requests
from django.core.exceptions import SuspiciousOperation
from django.test import Client
from django.urls import reverse

from diagnostics.integrations.sign_in.oidc import ProviderBackend
from diagnostics.models import AuditEvent, User

pytestmark = pytest.mark.django_db


def start(portal: Client) -> tuple[str, dict[str, list[str]]]:
    response = portal.get(reverse("oidc_authentication_init"))
    assert response.status_code == 302
    return response["Location"], parse_qs(urlsplit(response["Location"]).query)


def provider_sign_in(authorize_url: str, username: str) -> str:
    """A person at the provider: its login page, their password, back to the portal's callback (returned)."""
    browser = requests.Session()
    login = browser.get(authorize_url, timeout=10)
    assert "Example Children's Hospital sign-in" in login.text
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text).group(1)
    response = browser.post(
        login.url,
        {
            "csrfmiddlewaretoken": token,
            "username": username,
            "password": f"{username}-pass",
            "next": parse_qs(urlsplit(login.url).query)["next"][0],
        },
        headers={"Referer": login.url},
        allow_redirects=False,
        timeout=10,
    )
    while not (location := urljoin(response.url, response.headers["Location"])).startswith("http://testserver"):
        response = browser.get(location, allow_redirects=False, timeout=10)
    return location


def callback(portal: Client, url: str):  # type: ignore[no-untyped-def]
    parts = urlsplit(url)
    return portal.get(f"{parts.path}?{parts.query}")


def refused_reasons() -> list[str]:
    return [event.detail["reason"] for event in AuditEvent.objects.filter(action="auth.oidc_refused").order_by("pk")]


def test_a_clinician_signs_in_at_the_provider_with_pkce_and_gets_role_and_team_from_claims(oidc_sign_in):
    portal = Client()
    authorize_url, query = start(portal)
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert query["state"][0] and query["nonce"][0] and query["client_id"] == ["chest-xray-portal"]

    response = callback(portal, provider_sign_in(authorize_url, "dr.kim"))
    assert response.status_code == 302 and response["Location"] == reverse("worklist")
    user = User.objects.get(username="dr.kim")
    assert (user.role, user.team.name, user.directory) == (User.Role.CLINICIAN, "PICU", User.Directory.OIDC)
    assert user.directory_ref.startswith(oidc_sign_in.issuer + " ")
    assert (user.email, user.first_name) == ("kim.lee@hospital.example", "Kim")
    assert portal.get(reverse("worklist")).status_code == 200
    assert "auth.login" in AuditEvent.objects.values_list("action", flat=True)


def test_an_administrator_from_the_provider_still_sets_up_two_factor_sign_in(oidc_sign_in):
    portal = Client()
    authorize_url, _ = start(portal)
    callback(portal, provider_sign_in(authorize_url, "ops.ali"))
    assert User.objects.get(username="ops.ali").role == User.Role.ADMIN
    assert portal.get(reverse("model_list"))["Location"].startswith(reverse("two_factor_enrol"))


def test_a_callback_with_a_state_the_session_did_not_send_is_refused(oidc_sign_in):
    portal = Client()
    authorize_url, _ = start(portal)
    returned = provider_sign_in(authorize_url, "dr.kim")
    forged = re.sub(r"state=[^&]+", "state=forged", returned)
    response = callback(portal, forged)
    assert response["Location"] == reverse("login") + "?failed=oidc"
    assert not User.objects.filter(username="dr.kim").exists()
    assert "state not found" in refused_reasons()[0]
    assert "did not work" in portal.get(response["Location"]).content.decode()


def test_an_id_token_with_another_nonce_is_refused(oidc_sign_in):
    portal = Client()
    authorize_url, query = start(portal)
    returned = provider_sign_in(authorize_url, "dr.kim")
    session = portal.session
    session["oidc_states"][query["state"][0]]["nonce"] = "not-the-one-sent"
    session.save()
    assert callback(portal, returned)["Location"] == reverse("login") + "?failed=oidc"
    assert refused_reasons() == ["JWT Nonce verification failed."]


def test_the_provider_refuses_the_code_without_the_pkce_verifier(oidc_sign_in):
    portal = Client()
    authorize_url, query = start(portal)
    returned = provider_sign_in(authorize_url, "dr.kim")
    session = portal.session
    session["oidc_states"][query["state"][0]]["code_verifier"] = "x" * 64
    session.save()
    assert callback(portal, returned)["Location"] == reverse("login") + "?failed=oidc"
    assert "invalid_grant" in refused_reasons()[0]


def test_an_id_token_for_another_audience_or_with_a_broken_signature_is_refused(oidc_sign_in, settings):
    portal = Client()
    authorize_url, _ = start(portal)
    callback(portal, provider_sign_in(authorize_url, "dr.kim"))
    id_token = portal.session["oidc_id_token"]
    backend = ProviderBackend()
    key = backend.retrieve_matching_jwk(id_token)
    assert backend._verify_jws(id_token, key)["aud"] == "chest-xray-portal"

    backend.OIDC_RP_CLIENT_ID = "another-application"
    with pytest.raises(SuspiciousOperation, match="Audience"):
        backend._verify_jws(id_token, key)
    backend.OIDC_RP_CLIENT_ID = "chest-xray-portal"
    header, payload, signature = id_token.split(".")
    claims = jwt.decode(id_token, options={"verify_signature": False})
    forged_payload = jwt.api_jws.base64url_encode(
        jwt.api_jws.json.dumps({**claims, "preferred_username": "someone.else"}).encode()
    ).decode()
    with pytest.raises(SuspiciousOperation, match="Signature"):
        backend._verify_jws(f"{header}.{forged_payload}.{signature}", key)
    settings.OIDC_ISSUER = "https://elsewhere.example/o"
    with pytest.raises(SuspiciousOperation, match="issuer"):
        backend._verify_jws(id_token, key)


def test_a_person_the_provider_puts_in_none_of_the_portals_groups_is_refused(oidc_sign_in):
    portal = Client()
    authorize_url, _ = start(portal)
    assert callback(portal, provider_sign_in(authorize_url, "guest.jo"))["Location"].endswith("?failed=oidc")
    assert not User.objects.filter(username="guest.jo").exists()
    assert refused_reasons() == ["The directory puts this account in none of the portal's groups."]


def test_signing_out_ends_the_provider_session_too(oidc_sign_in):
    portal = Client()
    authorize_url, _ = start(portal)
    callback(portal, provider_sign_in(authorize_url, "dr.kim"))
    id_token = portal.session["oidc_id_token"]
    response = portal.post(reverse("logout"))
    end_session = urlsplit(response["Location"])
    assert response["Location"].startswith(oidc_sign_in.issuer + "/logout/")
    query = parse_qs(end_session.query)
    assert query["id_token_hint"] == [id_token]
    assert query["post_logout_redirect_uri"] == ["http://testserver/login/"]
    assert portal.get(reverse("worklist"))["Location"].startswith(reverse("login"))
    assert AuditEvent.objects.filter(action="auth.logout").exists()
    at_provider = requests.get(response["Location"], allow_redirects=False, timeout=10)
    assert at_provider.status_code == 302 and at_provider.headers["Location"] == "http://testserver/login/"


def test_the_login_page_offers_the_provider_and_keeps_password_sign_in_for_break_glass_admins(oidc_sign_in):
    page = Client().get(reverse("login")).content.decode()
    assert "Sign in with Example Children&#x27;s Hospital sign-in" in page
    assert "Administrator break-glass sign-in" in page
