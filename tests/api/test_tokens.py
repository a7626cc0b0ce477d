"""API tokens: issued by admins (key shown once), scoped to a team, revocable (401), managed in the admin too."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from diagnostics.models import ApiToken, AuditEvent, User
from diagnostics.services.api_tokens import api_token_hash
from tests.factories import CareTeamFactory, UserFactory

from ..factories import StudyFactory, WebhookDeliveryFactory
from .conftest import token_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_api(admin_user) -> APIClient:
    client = APIClient()
    client.force_login(admin_user)
    return client


def test_an_admin_issues_a_token_whose_key_is_shown_once_and_stored_hashed(admin_api, team, patient):
    response = admin_api.post("/api/v1/api-tokens/", {"name": "RIS bridge", "team_id": team.pk})
    assert response.status_code == 201, response.content
    body = response.json()
    key = body["key"]
    assert re.fullmatch(r"pdp_[A-Za-z0-9_-]{51}", key) and body["prefix"] == key[4:12]
    assert len(body["webhook_secret"]) == 64

    token = ApiToken.objects.get(pk=body["id"])
    assert token.key_sha256 == api_token_hash(key) and key not in str(token.__dict__)
    assert token.user.role == User.Role.API_CLIENT and token.user.team == team and not token.user.has_usable_password()
    first = admin_api.get("/api/v1/api-tokens/").json()["results"][0]
    for listed in (first, admin_api.get(f"/api/v1/api-tokens/{token.pk}/").json()):
        assert "key" not in listed and "webhook_secret" not in listed and listed["name"] == "RIS bridge"

    # The key works, acts as the API client account and sees the team's records.
    machine = token_client(key)
    me = machine.get("/api/v1/me/").json()
    assert me["username"] == token.user.username and me["role"] == "api_client" and me["team_id"] == team.pk
    assert me["token_name"] == "RIS bridge"
    assert [p["id"] for p in machine.get("/api/v1/patients/").json()["results"]] == [patient.pk]
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_a_revoked_token_answers_401_and_the_revocation_is_audited(admin_api, machine):
    assert machine.client.get("/api/v1/patients/").status_code == 200
    response = admin_api.post(f"/api/v1/api-tokens/{machine.token.pk}/revoke/")
    assert response.status_code == 200 and response.json()["revoked"] is True
    refused = machine.client.get("/api/v1/patients/")
    assert refused.status_code == 401
    assert refused.json() == {"error": {"code": "authentication_failed", "message": "This API token has been revoked."}}
    assert refused["WWW-Authenticate"].startswith("Bearer")
    assert AuditEvent.objects.filter(action="api_token.revoked", object_id=str(machine.token.pk)).count() == 1
    # Revoking again changes nothing and records nothing.
    admin_api.post(f"/api/v1/api-tokens/{machine.token.pk}/revoke/")
    assert AuditEvent.objects.filter(action="api_token.revoked").count() == 1


@pytest.mark.parametrize(
    "header",
    ["Bearer pdp_notarealtoken", "Bearer " + "pdp_" + "a" * 51, "Bearer", "Bearer a b", "Token pdp_x"],
)
def test_unknown_or_malformed_tokens_answer_401(header, machine):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/v1/patients/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


def test_the_first_versions_token_keyword_still_works(machine):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {machine.key}")
    assert client.get("/api/v1/me/").status_code == 200


def test_a_token_stops_working_when_its_account_leaves_the_team(machine, other_team):
    User.objects.filter(pk=machine.token.user_id).update(team=other_team)
    assert machine.client.get("/api/v1/patients/").status_code == 401


def test_a_token_stops_working_when_its_account_is_disabled(machine):
    User.objects.filter(pk=machine.token.user_id).update(is_active=False)
    assert machine.client.get("/api/v1/patients/").status_code == 401


def test_last_used_is_written_at_most_once_a_minute(machine):
    machine.client.get("/api/v1/me/")
    machine.token.refresh_from_db()
    first = machine.token.last_used_at
    machine.client.get("/api/v1/me/")
    machine.token.refresh_from_db()
    assert machine.token.last_used_at == first
    ApiToken.objects.filter(pk=machine.token.pk).update(last_used_at=timezone.now() - timezone.timedelta(minutes=5))
    machine.client.get("/api/v1/me/")
    machine.token.refresh_from_db()
    assert machine.token.last_used_at > first


def test_a_token_for_an_existing_account_must_match_its_team_and_role(admin_api, team, owner):
    other_team = CareTeamFactory()
    bridge = UserFactory(role=User.Role.API_CLIENT, team=other_team)
    response = admin_api.post("/api/v1/api-tokens/", {"name": "x", "team_id": team.pk, "user_id": bridge.pk})
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"user_id": ["The API client account belongs to another care team."]}
    response = admin_api.post("/api/v1/api-tokens/", {"name": "x", "team_id": team.pk, "user_id": owner.pk})
    assert response.status_code == 400 and "API client account" in response.json()["error"]["message"]
    own = UserFactory(role=User.Role.API_CLIENT, team=team)
    response = admin_api.post("/api/v1/api-tokens/", {"name": "second", "team_id": team.pk, "user_id": own.pk})
    assert response.status_code == 201 and response.json()["user_id"] == own.pk
    assert not ApiToken.objects.filter(name="x").exists()


def test_token_lists_filter_by_team_and_revocation(admin_api, machine, admin_user, other_team):
    from .conftest import issue_client

    other = issue_client(admin=admin_user, team=other_team, name="other ward")
    admin_api.post(f"/api/v1/api-tokens/{other.token.pk}/revoke/")
    names = lambda query: [t["name"] for t in admin_api.get(f"/api/v1/api-tokens/{query}").json()["results"]]  # noqa: E731
    assert names(f"?team={other_team.pk}") == ["other ward"]
    assert names("?revoked=true") == ["other ward"]
    assert names("?revoked=false") == ["RIS bridge"]
    assert names("?ordering=created_at") == ["RIS bridge", "other ward"]
    assert names("?ordering=-created_at") == ["other ward", "RIS bridge"]


def test_the_django_admin_issues_and_revokes_tokens_through_the_services(admin_user, team):
    browser = Client()
    browser.force_login(admin_user)
    response = browser.post(
        "/admin/diagnostics/apitoken/add/", {"name": "Lab system", "team": team.pk, "user": ""}, follow=True
    )
    assert response.status_code == 200
    token = ApiToken.objects.get(name="Lab system")
    page = response.content.decode()
    [key] = re.findall(r"pdp_[A-Za-z0-9_-]{51}", page)
    assert api_token_hash(key) == token.key_sha256 and token.webhook_secret in page
    assert token_client(key).get("/api/v1/me/").status_code == 200
    assert AuditEvent.objects.filter(action="api_token.issued", actor=admin_user).exists()

    # The key is not shown again on the token's page.
    assert key not in browser.get(f"/admin/diagnostics/apitoken/{token.pk}/change/").content.decode()

    browser.post(
        "/admin/diagnostics/apitoken/",
        {"action": "revoke", "_selected_action": [token.pk]},
        follow=True,
    )
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert token_client(key).get("/api/v1/me/").status_code == 401


def test_the_django_admin_refuses_an_account_of_another_team(admin_user, team, other_team):
    bridge = UserFactory(role=User.Role.API_CLIENT, team=other_team)
    browser = Client()
    browser.force_login(admin_user)
    response = browser.post("/admin/diagnostics/apitoken/add/", {"name": "x", "team": team.pk, "user": bridge.pk})
    assert response.status_code == 200
    assert "belongs to another care team" in response.content.decode()
    assert not ApiToken.objects.exists()


def test_webhook_deliveries_are_visible_read_only_in_the_django_admin(admin_user, machine, patient):

    study = StudyFactory(created_by=machine.token.user, patient=patient)
    delivery = WebhookDeliveryFactory(study=study)
    browser = Client()
    browser.force_login(admin_user)
    assert "https://his.example/hook" in browser.get("/admin/diagnostics/webhookdelivery/").content.decode()
    assert browser.get(f"/admin/diagnostics/webhookdelivery/{delivery.pk}/change/").status_code == 200
    assert browser.get("/admin/diagnostics/webhookdelivery/add/").status_code == 403
