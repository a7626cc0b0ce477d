"""Every change made in the Django admin is an audit event: who, which object, which fields from what to
what, secrets never written. Driven through the real admin pages with Django's test client."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, Permission
from django.urls import path, reverse

from diagnostics.admin_audit import AuditedAdminSite, AuditedModelAdminMixin
from diagnostics.audit_chain import chain_verify
from diagnostics.models import ApiToken, AuditEvent, CareTeam, DicomPeer, User

from .conftest import login_client
from .factories import AdminFactory, ApiTokenFactory, CareTeamFactory, UserFactory

pytestmark = pytest.mark.django_db

# No screen of the portal edits related rows inline yet; one that did would be audited like this one.
inline_site = AuditedAdminSite(name="inline_test")


class _MembersInline(admin.TabularInline):
    model = User
    fields = ("username", "role")
    extra = 0


class _TeamWithMembersAdmin(admin.ModelAdmin):
    inlines = [_MembersInline]


inline_site.register(CareTeam, _TeamWithMembersAdmin)
urlpatterns = [path("inline-admin/", inline_site.urls)]


class _FormFields(HTMLParser):
    """The values a browser would submit from a page's main form (inputs, selects, textareas)."""

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, list[str]] = {}
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        name = a.get("name")
        if tag == "input" and name and a.get("type", "text") not in ("submit", "button", "file", "image"):
            if a.get("type") in ("checkbox", "radio") and "checked" not in a:
                return
            self.data.setdefault(name, []).append(a.get("value", "on" if a.get("type") == "checkbox" else ""))
        elif tag == "select" and name:
            self._select = name
            self.data.setdefault(name, [])
        elif tag == "option" and self._select and "selected" in a:
            self.data[self._select].append(a.get("value", ""))
        elif tag == "textarea" and name:
            self._textarea = name
            self.data[name] = [""]

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data: str) -> None:
        if self._textarea:
            self.data[self._textarea][0] += data.lstrip("\n") if not self.data[self._textarea][0] else data


def form_of(page: Any) -> dict[str, Any]:
    assert page.status_code == 200, page.status_code
    parser = _FormFields()
    parser.feed(page.content.decode())
    return {k: v if len(v) != 1 else v[0] for k, v in parser.data.items() if k != "csrfmiddlewaretoken"}


def _events(action: str, obj: Any = None) -> list[AuditEvent]:
    events = AuditEvent.objects.filter(action=action).order_by("pk")
    if obj is not None:
        events = events.filter(object_type=obj._meta.label, object_id=str(obj.pk))
    return list(events)


@pytest.fixture
def superuser() -> User:
    return AdminFactory(is_superuser=True, username="root-admin")


@pytest.fixture
def browser(superuser, settings):
    # Administrators pass a one-time code before the admin answers (sign_in/two_factor.py); what is tested
    # here is what happens after that, so the session is not asked for one.
    settings.TWO_FACTOR_REQUIRED_FOR = []
    return login_client(superuser)


def test_every_admin_screen_records_its_changes():
    """Whatever is registered on the admin site (ours, Django's groups, Celery beat, Axes, ...)."""
    unaudited = [m._meta.label for m, a in admin.site._registry.items() if not isinstance(a, AuditedModelAdminMixin)]
    assert unaudited == []
    assert {"auth.Group", "diagnostics.User", "diagnostics.DicomPeer", "diagnostics.ApiToken"} <= {
        m._meta.label for m in admin.site._registry
    }


def test_moving_a_user_to_another_team_and_making_them_staff(browser, superuser, team, other_team, member):
    # The admin's form shows times to the second: a stored time with microseconds would change on saving.
    User.objects.filter(pk=member.pk).update(date_joined=member.date_joined.replace(microsecond=0))
    url = reverse("admin:diagnostics_user_change", args=[member.pk])
    data = form_of(browser.get(url))
    data.update(team=str(other_team.pk), is_staff="on", _save="Save")
    answer = browser.post(url, data)
    assert answer.status_code == 302, answer.content.decode()[:2000]
    member.refresh_from_db()
    assert member.team_id == other_team.pk and member.is_staff

    (event,) = _events("admin.changed", member)
    assert event.actor_id == superuser.pk
    assert event.team_id == other_team.pk
    changes = event.detail["changes"]
    assert changes["team"] == {"from": team.pk, "to": other_team.pk}
    assert changes["is_staff"] == {"from": False, "to": True}
    assert set(changes) == {"team", "is_staff"}  # nothing else moved
    assert event.detail["admin_log"] is not None
    assert chain_verify().first_break is None


def test_a_password_set_in_the_admin_is_recorded_but_never_written(browser, member):
    old_hash = member.password
    url = reverse("admin:auth_user_password_change", args=[member.pk])
    new_password = "Correct-horse-battery-9"
    answer = browser.post(url, {"password1": new_password, "password2": new_password, "usable_password": "true"})
    assert answer.status_code == 302, answer.content.decode()[:2000]
    member.refresh_from_db()
    assert member.check_password(new_password)

    (event,) = _events("admin.changed", member)
    assert event.detail["changes"]["password"] == {"from": "[redacted]", "to": "[redacted]"}
    everything = json.dumps([e.detail for e in AuditEvent.objects.all()])
    assert new_password not in everything
    assert old_hash not in everything and member.password not in everything
    assert old_hash.split("$")[-1] not in everything


def test_adding_a_user_records_its_fields_without_the_password(browser, team):
    url = reverse("admin:diagnostics_user_add")
    data = form_of(browser.get(url))
    secret = "Another-long-passw0rd"
    data.update(username="newclinician", password1=secret, password2=secret, usable_password="true",
                role=User.Role.CLINICIAN, team=str(team.pk), _save="Save")  # fmt: skip
    answer = browser.post(url, data)
    assert answer.status_code == 302, answer.content.decode()[:3000]
    created = User.objects.get(username="newclinician")
    (event,) = _events("admin.added", created)
    assert event.detail["fields"]["team"] == team.pk
    assert event.detail["fields"]["password"] == "[redacted]"
    assert secret not in json.dumps(event.detail) and created.password not in json.dumps(event.detail)


def test_moving_a_dicom_peer_to_another_team(browser, superuser, team, other_team, owner):
    peer = DicomPeer.objects.create(ae_title="PACSA", team=team, service_user=owner, host="10.0.0.5", port=104)
    url = reverse("admin:diagnostics_dicompeer_change", args=[peer.pk])
    data = form_of(browser.get(url))
    data.update(team=str(other_team.pk), _save="Save")
    answer = browser.post(url, data)
    assert answer.status_code == 302, answer.content.decode()[:3000]
    (event,) = _events("admin.changed", peer)
    assert event.actor_id == superuser.pk
    assert event.detail["changes"]["team"] == {"from": team.pk, "to": other_team.pk}


def test_a_role_group_created_with_permissions(browser):
    permission = Permission.objects.get(codename="change_user")
    url = reverse("admin:auth_group_add")
    answer = browser.post(url, {"name": "Ward managers", "permissions": [str(permission.pk)], "_save": "Save"})
    assert answer.status_code == 302, answer.content.decode()[:2000]
    group = Group.objects.get(name="Ward managers")
    (event,) = _events("admin.added", group)
    assert event.detail["fields"] == {"id": group.pk, "name": "Ward managers", "permissions": [permission.pk]}


def test_bulk_delete_records_every_deleted_object(browser, superuser):
    teams = [CareTeamFactory(name="Spare A"), CareTeamFactory(name="Spare B")]
    url = reverse("admin:diagnostics_careteam_changelist")
    ids = [str(t.pk) for t in teams]
    confirm = browser.post(url, {"action": "delete_selected", "_selected_action": ids})
    assert confirm.status_code == 200
    assert _events("admin.deleted") == []  # the confirmation page changes nothing
    answer = browser.post(url, {"action": "delete_selected", "_selected_action": ids, "post": "yes"})
    assert answer.status_code == 302
    assert not CareTeam.objects.filter(pk__in=ids).exists()
    deleted = _events("admin.deleted")
    assert sorted(e.object_id for e in deleted) == sorted(ids)
    assert {e.detail["fields"]["name"] for e in deleted} == {"Spare A", "Spare B"}
    assert all(e.actor_id == superuser.pk and e.team_id is None for e in deleted)


def test_the_delete_page_records_the_deletion(browser):
    spare = CareTeamFactory(name="Spare C")
    answer = browser.post(reverse("admin:diagnostics_careteam_delete", args=[spare.pk]), {"post": "yes"})
    assert answer.status_code == 302
    (event,) = _events("admin.deleted")
    assert event.object_id == str(spare.pk) and event.detail["repr"] == "Spare C"


def test_an_admin_action_records_what_it_changed(browser, superuser, team):
    client = UserFactory(role=User.Role.API_CLIENT, team=team)
    token = ApiTokenFactory(user=client, team=team)
    url = reverse("admin:diagnostics_apitoken_changelist")
    answer = browser.post(url, {"action": "revoke", "_selected_action": [str(token.pk)]})
    assert answer.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    (event,) = _events("admin.action")
    assert event.actor_id == superuser.pk
    assert event.detail["action"] == "revoke" and event.detail["objects"] == [str(token.pk)]
    assert event.detail["changes"][str(token.pk)]["revoked_at"]["from"] is None
    assert token.key_sha256 not in json.dumps([e.detail for e in AuditEvent.objects.all()])
    assert ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=False).exists()


def test_list_editable_changes_are_recorded_with_their_values(browser, settings, team):
    """A change from the change list (list_editable) goes through save_model without get_object."""
    from diagnostics.admin import CareTeamAdmin

    model_admin = admin.site._registry[CareTeam]
    before = (model_admin.list_display, model_admin.list_editable)
    model_admin.list_display, model_admin.list_editable = ("id", "name"), ("name",)
    try:
        url = reverse("admin:diagnostics_careteam_changelist")
        data = {
            "form-TOTAL_FORMS": "1", "form-INITIAL_FORMS": "1", "form-0-id": str(team.pk),
            "form-0-name": "Renamed ward", "_save": "Save",
        }  # fmt: skip
        answer = browser.post(url, data)
        assert answer.status_code == 302, answer.content.decode()[:2000]
    finally:
        model_admin.list_display, model_admin.list_editable = before
    assert isinstance(model_admin, CareTeamAdmin)
    (event,) = _events("admin.changed", team)
    assert event.detail["changes"]["name"]["to"] == "Renamed ward"
    assert event.detail["changes"]["name"]["from"] == team.name


@pytest.mark.urls("tests.test_admin_audit")
def test_inline_changes_are_recorded_with_the_parent(browser, team, member):
    url = reverse("inline_test:diagnostics_careteam_change", args=[team.pk])
    data = form_of(browser.get(url))
    role_field = next(name for name, value in data.items() if name.endswith("-role") and value == member.role)
    data.update({role_field: User.Role.ADMIN, "_save": "Save"})
    answer = browser.post(url, data)
    assert answer.status_code == 302, answer.content.decode()[:3000]
    (event,) = _events("admin.changed", team)
    (inline,) = event.detail["inlines"]
    assert inline["model"] == "diagnostics.User" and inline["id"] == str(member.pk)
    assert inline["changed"]["role"] == {"from": User.Role.CLINICIAN, "to": User.Role.ADMIN}


def test_a_clocked_schedule_edited_in_the_admin_is_audited_and_its_date_and_time_boxes_are_named(browser):
    """Celery beat's admin forms get named date and time boxes (diagnostics/admin_widgets.py: the split
    date/time widget has no label element) from the same site that audits them: both mixins, one change."""
    import datetime as dt

    from django.utils import timezone
    from django_celery_beat.models import ClockedSchedule

    registered = admin.site._registry[ClockedSchedule]
    assert isinstance(registered, AuditedModelAdminMixin)
    clocked = ClockedSchedule.objects.create(clocked_time=timezone.now().replace(microsecond=0))
    url = reverse("admin:django_celery_beat_clockedschedule_change", args=[clocked.pk])
    page = browser.get(url)
    html = page.content.decode()
    assert 'aria-label="Clock Time: date"' in html and 'aria-label="Clock Time: time"' in html
    data = form_of(page)
    data.update(clocked_time_0="2031-05-04", clocked_time_1="06:30:00", _save="Save")
    answer = browser.post(url, data)
    assert answer.status_code == 302, answer.content.decode()[:2000]
    clocked.refresh_from_db()
    assert timezone.localtime(clocked.clocked_time).date() == dt.date(2031, 5, 4)
    (event,) = _events("admin.changed", clocked)
    assert set(event.detail["changes"]) == {"clocked_time"}
