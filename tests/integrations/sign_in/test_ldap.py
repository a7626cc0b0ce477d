"""Sign-in against a real OpenLDAP directory (slapd started by the tests, people and groups from
directory.ldif): accounts created and updated from groups, disabled accounts refused at once, lockout and
audit as for local accounts, and the directory sync that stops a disabled account's API tokens."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import ldap
import pytest
from django.test import Client
from django.urls import reverse

from diagnostics.integrations.sign_in.tasks import sync_directory_accounts
from diagnostics.models import AuditEvent, User
from tests.conftest import api_client_for
from tests.factories import AdminFactory, UserFactory

from .conftest import CLINICIANS, NICU, PICU, person
from .slapd import Directory

pytestmark = pytest.mark.django_db


def sign_in(client: Client, username: str, password: str) -> object:
    return client.post(reverse("login"), {"username": username, "password": password})


@contextmanager
def directory_change(directory: Directory, dn: str, changes: list[tuple[int, str, list[bytes]]]) -> Iterator[None]:
    """Change an entry for one test and put it back (the directory lives for the whole session)."""
    connection = directory.admin_connection()
    before = connection.search_s(dn, ldap.SCOPE_BASE, "(objectClass=*)", [name for _, name, _ in changes])[0][1]
    connection.modify_s(dn, changes)
    try:
        yield
    finally:
        connection.modify_s(dn, [(ldap.MOD_REPLACE, name, before.get(name, [])) for _, name, _ in changes])


def actions() -> list[str]:
    return list(AuditEvent.objects.order_by("pk").values_list("action", flat=True))


def test_a_clinician_signs_in_with_the_directory_password_and_gets_role_and_team_from_groups(ldap_sign_in):
    client = Client()
    response = sign_in(client, "ada.wong", "ada.wong-pass")
    assert response.status_code == 302 and response["Location"] == reverse("worklist")
    user = User.objects.get(username="ada.wong")
    assert (user.directory, user.directory_ref) == (User.Directory.LDAP, person("ada.wong"))
    assert (user.role, user.team.name, user.is_staff) == (User.Role.CLINICIAN, "PICU", False)
    assert (user.email, user.first_name, user.last_name) == ("ada.wong@hospital.example", "Ada", "Wong")
    assert not user.has_usable_password()  # the directory keeps the password
    assert client.get(reverse("worklist")).status_code == 200
    assert actions()[:3] == ["care_team.created", "auth.directory_account_created", "auth.login"]


def test_a_group_change_in_the_directory_moves_the_account_at_its_next_sign_in(ldap_sign_in):
    sign_in(Client(), "ada.wong", "ada.wong-pass")
    connection = ldap_sign_in.admin_connection()
    entry = person("ada.wong").encode()
    connection.modify_s(PICU, [(ldap.MOD_DELETE, "member", [entry])])
    connection.modify_s(NICU, [(ldap.MOD_ADD, "member", [entry])])
    try:
        assert sign_in(Client(), "ada.wong", "ada.wong-pass").status_code == 302
    finally:
        connection.modify_s(NICU, [(ldap.MOD_DELETE, "member", [entry])])
        connection.modify_s(PICU, [(ldap.MOD_ADD, "member", [entry])])
    assert User.objects.get(username="ada.wong").team.name == "NICU"
    moved = AuditEvent.objects.get(action="auth.directory_account_updated")
    assert moved.detail["before"]["team"] == "PICU" and moved.detail["after"]["team"] == "NICU"


def test_an_administrator_from_the_directory_is_staff_and_must_set_up_two_factor_sign_in(ldap_sign_in):
    client = Client()
    assert sign_in(client, "sam.okafor", "sam.okafor-pass").status_code == 302
    user = User.objects.get(username="sam.okafor")
    assert (user.role, user.team, user.is_staff, user.is_superuser) == (User.Role.ADMIN, None, True, False)
    response = client.get(reverse("model_list"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("two_factor_enrol"))


def test_a_disabled_directory_account_is_refused_at_once_though_its_password_is_right(ldap_sign_in):
    response = sign_in(Client(), "lee.gone", "lee.gone-pass")
    assert response.status_code == 200 and b"correct username and password" in response.content
    assert not User.objects.filter(username="lee.gone").exists()
    refused = AuditEvent.objects.get(action="auth.directory_refused")
    assert refused.detail == {"username": "lee.gone", "reason": "disabled"}
    assert "auth.login_failed" in actions()


def test_an_account_the_directory_disables_is_deactivated_and_its_session_ends(ldap_sign_in):
    client = Client()
    sign_in(client, "ada.wong", "ada.wong-pass")
    with directory_change(ldap_sign_in, person("ada.wong"), [(ldap.MOD_REPLACE, "userAccountControl", [b"514"])]):
        assert sign_in(Client(), "ada.wong", "ada.wong-pass").status_code == 200
    user = User.objects.get(username="ada.wong")
    assert not user.is_active
    assert client.get(reverse("worklist"))["Location"].startswith(reverse("login"))
    assert AuditEvent.objects.get(action="auth.directory_account_deactivated").detail["reason"] == (
        "The directory has disabled this account."
    )
    # Enabled again in the directory: the next sign-in reactivates the account.
    assert sign_in(Client(), "ada.wong", "ada.wong-pass").status_code == 302
    assert User.objects.get(username="ada.wong").is_active


def test_a_person_in_none_of_the_portals_groups_is_refused(ldap_sign_in):
    assert sign_in(Client(), "pat.visitor", "pat.visitor-pass").status_code == 200
    assert not User.objects.filter(username="pat.visitor").exists()
    assert AuditEvent.objects.get(action="auth.directory_refused").detail["reason"] == (
        "The directory puts this account in none of the portal's groups."
    )


def test_wrong_directory_passwords_lock_the_account_out_as_for_local_accounts(ldap_sign_in, settings):
    settings.AXES_FAILURE_LIMIT = 3
    client = Client()
    for _ in range(3):
        sign_in(client, "ada.wong", "wrong")
    response = sign_in(client, "ada.wong", "ada.wong-pass")
    assert response.status_code == 429 and b"Too many failed" in response.content
    assert actions()[:3] == ["auth.login_failed", "auth.login_failed", "auth.locked_out"]
    assert not User.objects.filter(username="ada.wong").exists()


def test_the_directory_does_not_take_over_a_local_administrator_of_the_same_name(ldap_sign_in):
    AdminFactory(username="sam.okafor")
    assert sign_in(Client(), "sam.okafor", "sam.okafor-pass").status_code == 200
    local = User.objects.get(username="sam.okafor")
    assert local.directory == "" and local.check_password("correct horse battery")
    # Its own, local password still signs it in: it is the break-glass account.
    assert sign_in(Client(), "sam.okafor", "correct horse battery").status_code == 302


def test_without_local_sign_in_only_local_administrators_sign_in_by_password(ldap_sign_in, settings):
    settings.SIGN_IN_METHODS = ["ldap"]
    settings.LOCAL_SIGN_IN_BREAK_GLASS_ONLY = True
    UserFactory(username="local.clinician")
    AdminFactory(username="breakglass")
    assert sign_in(Client(), "local.clinician", "correct horse battery").status_code == 200
    assert sign_in(Client(), "breakglass", "correct horse battery").status_code == 302
    assert sign_in(Client(), "ada.wong", "ada.wong-pass").status_code == 302


def test_the_directory_sync_stops_the_api_tokens_of_an_account_the_directory_disabled(ldap_sign_in):
    sign_in(Client(), "ada.wong", "ada.wong-pass")
    sign_in(Client(), "sam.okafor", "sam.okafor-pass")
    api = api_client_for(User.objects.get(username="ada.wong"))
    assert api.get("/api/v1/patients/").status_code == 200
    with directory_change(ldap_sign_in, person("ada.wong"), [(ldap.MOD_REPLACE, "userAccountControl", [b"514"])]):
        assert sync_directory_accounts() == {"checked": 2, "deactivated": 1}
    assert api.get("/api/v1/patients/").status_code == 401
    assert User.objects.get(username="sam.okafor").is_active
    # Taken out of the portal's groups: the next sync deactivates the account too.
    connection = ldap_sign_in.admin_connection()
    connection.modify_s(CLINICIANS, [(ldap.MOD_ADD, "member", [person("sam.okafor").encode()])])
    try:
        assert sync_directory_accounts() == {"checked": 1, "deactivated": 0}
    finally:
        connection.modify_s(CLINICIANS, [(ldap.MOD_DELETE, "member", [person("sam.okafor").encode()])])


def test_the_directory_sync_changes_nothing_when_the_directory_is_unreachable(ldap_sign_in, settings):
    sign_in(Client(), "ada.wong", "ada.wong-pass")
    settings.AUTH_LDAP_SERVER_URI = "ldap://127.0.0.1:9"
    assert sync_directory_accounts() == {"checked": 0, "deactivated": 0}
    assert User.objects.get(username="ada.wong").is_active
