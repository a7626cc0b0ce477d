"""Patient-data security: deploy checks, password hashing, lockout, session expiry, upload limits, audit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import DatabaseError, connection, transaction
from django.test import Client
from django.urls import reverse

from diagnostics.models import AuditEvent, Image, Study
from diagnostics.services.audit import audit_record

from .conftest import api_client_for, bare_environment, jpeg_upload, login_client
from .factories import StudyFactory
from .images import jpeg_bytes

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_production_settings_pass_the_deploy_check_at_warning_level(tmp_path):
    env = bare_environment(
        DJANGO_SETTINGS_MODULE="portal.settings.base",
        PORTAL_VAR_DIR=str(tmp_path),
        DATABASE_URL="postgres://portal@127.0.0.1:5432/portal",
        CELERY_BROKER_URL="redis://127.0.0.1:6379/0",
        SECRET_KEY="k7#pW2q!x9Zr$Lm4vT8nB1cY6hJ3dF0sG5aQ@eR+uI*oP&yX_wE-tN",
        ALLOWED_HOSTS="portal.hospital.example",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_passwords_are_hashed_with_argon2_outside_tests():
    from portal.settings import base

    assert base.PASSWORD_HASHERS[0] == "django.contrib.auth.hashers.Argon2PasswordHasher"


def test_sessions_expire_after_idle_time():
    assert settings.SESSION_SAVE_EVERY_REQUEST is True
    assert settings.SESSION_COOKIE_AGE <= 60 * 60


@pytest.mark.django_db
def test_repeated_failed_logins_lock_the_account_and_are_audited(owner, client):
    url = reverse("login")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        response = client.post(url, {"username": owner.username, "password": "wrong password"})
        assert response.status_code in (200, 429)
    locked = client.post(url, {"username": owner.username, "password": "correct horse battery"})
    assert locked.status_code == 429
    assert "Too many failed log-in attempts" in locked.content.decode()
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(action="auth.login_failed").count() >= settings.AXES_FAILURE_LIMIT
    assert AuditEvent.objects.filter(action="auth.locked_out", detail__username=owner.username).exists()


@pytest.mark.django_db
def test_a_wrong_password_keeps_the_username_and_never_the_password(owner, client):
    page = client.post(reverse("login"), {"username": owner.username, "password": "wrong password"}).content.decode()
    assert f'value="{owner.username}">' in page.split('id="id_username"')[1].split("<label")[0]
    assert "wrong password" not in page
    # The password is what to retype: it takes the focus, not the username.
    assert 'autocomplete="current-password" required autofocus>' in page
    fresh = client.get(reverse("login")).content.decode()
    assert 'value="">' in fresh and 'value="" autofocus>' in fresh


@pytest.mark.django_db
def test_a_correct_login_is_audited(owner, client):
    response = client.post(reverse("login"), {"username": owner.username, "password": "correct horse battery"})
    assert response.status_code == 302
    assert AuditEvent.objects.filter(action="auth.login", actor=owner).exists()


@pytest.mark.django_db
def test_an_oversized_upload_is_refused_before_the_body_is_read(owner, patient, settings, media_root):
    settings.UPLOAD_MAX_BYTES = 1024
    big = SimpleUploadedFile("big.jpeg", b"\xff\xd8\xff" + b"0" * (3 * 1024 * 1024), content_type="image/jpeg")
    response = api_client_for(owner).post(
        reverse("api_study_list"), {"patient_id": patient.pk, "images": [big]}, format="multipart"
    )
    assert response.status_code == 413
    assert "larger than the" in response.content.decode()
    assert not Study.objects.exists() and list(media_root.rglob("*")) == []


@pytest.mark.django_db
def test_an_upload_that_passes_the_declared_size_is_stopped_while_streaming(owner, patient, settings, media_root):
    settings.UPLOAD_MAX_BYTES = 4096  # the request's Content-Length stays under limit + envelope
    image = SimpleUploadedFile("chest.jpeg", jpeg_bytes(size=256), content_type="image/jpeg")
    assert image.size > 4096
    response = login_client(owner).post(reverse("study_new", args=[patient.pk]), {"modality": "CR", "images": [image]})
    assert response.status_code == 413
    assert "larger than the" in response.content.decode()
    assert not Image.objects.exists() and list(media_root.rglob("*")) == []


def test_favicon_ico_leads_to_the_portal_icon_which_is_served(client):
    """Pages and the admin link the SVG icon; a client asking for /favicon.ico anyway is sent to it."""
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"] == "/static/diagnostics/favicon.svg"
    from django.contrib.staticfiles import finders

    # collectstatic gathers it for WhiteNoise (the browser tests load it from the live server).
    assert Path(finders.find("diagnostics/favicon.svg")).read_text().startswith("<svg")


@pytest.mark.django_db
def test_media_is_never_served_from_a_public_path(owner, patient, client):
    assert settings.MEDIA_URL is None
    for path in ("/media/", "/media/studies/x", "/studies/"):
        assert client.get(path).status_code == 404


@pytest.mark.django_db
def test_the_database_refuses_to_change_or_delete_audit_events(owner):
    event = audit_record(action="test.event", actor=owner)
    for statement in (
        "UPDATE diagnostics_auditevent SET action = 'forged' WHERE id = %s",
        "DELETE FROM diagnostics_auditevent WHERE id = %s",
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement, [event.pk])
    event.refresh_from_db()
    assert event.action == "test.event"
    with pytest.raises(PermissionError):
        event.save()


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://8.8.8.8/hook", True),
        ("http://127.0.0.1:9/hook", True),  # allow-listed in the test settings (the webhook tests' receiver)
        ("http://10.0.0.5/hook", False),
        ("http://192.168.1.20/hook", False),
        ("http://169.254.169.254/latest/meta-data", False),
        ("http://[::1]/hook", False),
        ("ftp://8.8.8.8/hook", False),
        ("https://no-such-host.invalid/hook", False),
    ],
)
def test_webhook_callbacks_cannot_target_private_addresses(url, allowed):
    from diagnostics.integrations.webhooks.services import webhook_url_allowed

    assert webhook_url_allowed(url) is allowed


@pytest.mark.django_db
def test_a_study_with_a_private_callback_url_is_refused(owner, patient, settings):
    from django.core.exceptions import ValidationError

    from diagnostics.services.images import image_validate_upload
    from diagnostics.services.studies import study_create

    upload = image_validate_upload(filename="a.jpeg", data=jpeg_bytes())
    with pytest.raises(ValidationError, match="public address"):
        study_create(user=owner, patient=patient, uploads=[upload], callback_url="http://10.1.2.3/his")
    assert not Study.objects.exists()


@pytest.mark.django_db
def test_pages_carry_the_idle_warning_and_keepalive_extends_the_session(owner, client):
    client.force_login(owner)
    page = client.get(reverse("worklist")).content.decode()
    assert 'id="session-warning"' in page and f'data-idle-seconds="{settings.SESSION_COOKIE_AGE}"' in page
    assert "session-timeout.js" in page
    response = client.post(reverse("session_keepalive"))
    assert response.status_code == 204
    assert response.cookies["sessionid"]["max-age"] == settings.SESSION_COOKIE_AGE  # expiry pushed forward
    client.logout()
    assert client.post(reverse("session_keepalive")).status_code == 302


def test_patient_data_is_never_cached_and_no_page_may_run_inline_script(owner, patient):
    import re

    study = StudyFactory(created_by=owner, patient=patient)
    client = login_client(owner)
    for url in (reverse("worklist"), reverse("study_detail", args=[study.pk]), reverse("patient_list")):
        response = client.get(url)
        assert response["Cache-Control"] == "no-store, private", url
        assert "HX-Request" in response["Vary"], url
        policy = response["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", response.content.decode()), url  # no inline script
    api = api_client_for(owner)
    assert api.get(reverse("api_study_detail", kwargs={"study_id": study.pk}))["Cache-Control"] == "no-store, private"
    assert "script-src 'self'" in Client().get(reverse("login"))["Content-Security-Policy"]  # anonymous pages too


def test_with_redis_down_reads_work_and_a_new_study_is_stored_for_the_reconciler(
    owner, patient, settings, monkeypatch, django_capture_on_commit_callbacks
):
    from kombu.exceptions import OperationalError

    from diagnostics.tasks import run_study_inference

    # The throttle counters' Redis and the broker both unreachable.
    unreachable = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:9/0"}
    settings.CACHES = {**settings.CACHES, "api_throttle": unreachable}

    def broker_down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:9. Connection refused.")

    monkeypatch.setattr(run_study_inference, "delay", broker_down)
    api = api_client_for(owner)
    assert api.get(reverse("api_me")).status_code == 200  # was a 500 for every call
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            reverse("api_study_list"), {"patient_id": patient.pk, "images": [jpeg_upload()]}, format="multipart"
        )
    assert response.status_code == 202, response.content  # stored: never a 500 for a saved study
    study = Study.objects.get(pk=response.json()["id"])
    assert study.status == Study.Status.QUEUED  # the reconciler sends it once the broker is back
