"""Two-factor sign-in through its pages: required for administrators, optional for clinicians, recovery
codes, and every enrolment, failure and reset audited."""

from __future__ import annotations

import re
import time

import pytest
from django.test import Client
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

from diagnostics.models import AuditEvent
from tests.factories import AdminFactory, UserFactory
from tests.two_factor import authenticator_code, authenticator_for

pytestmark = [pytest.mark.django_db, pytest.mark.two_factor]
PASSWORD = "correct horse battery"
THROTTLE_SECONDS = 1.1


def signed_in(username: str) -> Client:
    client = Client()
    response = client.post(reverse("login"), {"username": username, "password": PASSWORD})
    assert response.status_code == 302, response.content
    return client


def actions() -> list[str]:
    return list(AuditEvent.objects.order_by("pk").values_list("action", flat=True))


def test_an_administrator_must_set_up_an_authenticator_before_anything_else():
    admin = AdminFactory(username="root")
    client = signed_in("root")
    response = client.get(reverse("model_list"))
    assert response.status_code == 302
    assert response["Location"] == reverse("two_factor_enrol") + "?next=%2Fmodels%2F"
    assert client.get("/api/v1/patients/").json()["error"]["code"] == "two_factor_required"

    page = client.get(response["Location"])
    assert b"<svg" in page.content and b"totp-secret" in page.content
    device = TOTPDevice.objects.get(user=admin, confirmed=False)
    wrong = client.post(reverse("two_factor_enrol"), {"code": "000000", "next": "/models/"})
    assert b"not right" in wrong.content and not TOTPDevice.objects.filter(confirmed=True).exists()
    time.sleep(THROTTLE_SECONDS)  # django-otp refuses any code for 1 s after a wrong one, 2 s after two, ...

    done = client.post(reverse("two_factor_enrol"), {"code": authenticator_code(device), "next": "/models/"})
    codes = re.findall(rb"<li><code>(\w+)</code></li>", done.content)
    assert len(codes) == 10
    assert client.get(reverse("model_list")).status_code == 200
    assert actions()[-3:] == ["two_factor.enrol_failed", "two_factor.enrolled", "two_factor.recovery_codes_issued"]


def test_an_enrolled_administrator_types_a_code_at_each_sign_in():
    admin = AdminFactory(username="root")
    device = authenticator_for(admin)
    client = signed_in("root")
    response = client.get(reverse("worklist"))
    assert response["Location"] == reverse("two_factor_verify") + "?next=%2F"
    refused = client.post(reverse("two_factor_verify"), {"code": "123456", "next": "/"})
    assert refused.status_code == 200 and b"not right" in refused.content
    assert client.get(reverse("worklist")).status_code == 302
    time.sleep(THROTTLE_SECONDS)
    passed = client.post(reverse("two_factor_verify"), {"code": authenticator_code(device), "next": "/"})
    assert passed["Location"] == "/"
    assert client.get(reverse("worklist")).status_code == 200
    second_steps = [action for action in actions() if action.startswith("auth.two_factor")]
    assert second_steps == ["auth.two_factor_failed", "auth.two_factor_verified"]


def test_a_recovery_code_signs_in_once():
    admin = AdminFactory(username="root")
    device = authenticator_for(admin)
    client = signed_in("root")
    client.post(reverse("two_factor_verify"), {"code": authenticator_code(device)})
    page = client.post(reverse("two_factor_recovery_codes"))
    code = re.findall(r"<li><code>(\w+)</code></li>", page.content.decode())[0]

    first = signed_in("root")
    assert first.post(reverse("two_factor_verify"), {"code": code, "next": "/"}).status_code == 302
    verified = AuditEvent.objects.filter(action="auth.two_factor_verified").order_by("pk").last()
    assert verified.detail == {"with": "recovery code"}
    second = signed_in("root")
    assert second.post(reverse("two_factor_verify"), {"code": code, "next": "/"}).status_code == 200


def test_two_factor_sign_in_is_optional_for_clinicians_but_asked_once_they_enrol():
    clinician = UserFactory(username="dr.ada")
    client = signed_in("dr.ada")
    assert client.get(reverse("worklist")).status_code == 200
    client.get(reverse("two_factor_enrol"))
    device = TOTPDevice.objects.get(user=clinician)
    client.post(reverse("two_factor_enrol"), {"code": authenticator_code(device)})

    again = signed_in("dr.ada")
    assert again.get(reverse("worklist"))["Location"].startswith(reverse("two_factor_verify"))
    again.post(reverse("two_factor_verify"), {"code": authenticator_code(device)})
    again.post(reverse("two_factor_disable"))
    assert not TOTPDevice.objects.filter(user=clinician).exists()
    assert AuditEvent.objects.get(action="two_factor.reset").actor == clinician
    assert signed_in("dr.ada").get(reverse("worklist")).status_code == 200


def test_an_administrator_cannot_turn_off_their_own_two_factor_sign_in():
    admin = AdminFactory(username="root")
    device = authenticator_for(admin)
    client = signed_in("root")
    client.post(reverse("two_factor_verify"), {"code": authenticator_code(device)})
    response = client.post(reverse("two_factor_disable"), follow=True)
    assert b"an administrator can reset it" in response.content
    assert TOTPDevice.objects.filter(user=admin).exists()


def test_an_administrator_resets_a_lost_authenticator_in_the_admin_audited():
    admin = AdminFactory(username="root", is_superuser=True)
    other = AdminFactory(username="lost.phone")
    authenticator_for(other)
    client = signed_in("root")
    client.post(reverse("two_factor_verify"), {"code": authenticator_code(authenticator_for(admin))})
    response = client.post(
        reverse("admin:diagnostics_user_changelist"),
        {"action": "reset_two_factor", "_selected_action": [other.pk]},
    )
    assert response.status_code == 302
    assert not TOTPDevice.objects.filter(user=other).exists()
    reset = AuditEvent.objects.get(action="two_factor.reset")
    assert (reset.actor, reset.object_id) == (admin, str(other.pk))


def test_settings_can_require_two_factor_sign_in_of_clinicians_too(settings):
    settings.TWO_FACTOR_REQUIRED_FOR = ["admin", "clinician"]
    UserFactory(username="dr.ada")
    assert signed_in("dr.ada").get(reverse("worklist"))["Location"].startswith(reverse("two_factor_enrol"))


def test_api_tokens_never_meet_two_factor_sign_in(owner):
    from tests.conftest import api_client_for

    admin = AdminFactory(username="root", team=owner.team)
    assert api_client_for(admin).get("/api/v1/patients/").status_code != 403
