"""With no configuration at all the portal runs on SQLite with tasks in process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import bare_environment

pytestmark = pytest.mark.slow  # fresh Django processes (subprocess)

ROOT = Path(__file__).resolve().parent.parent


PROBE = """
import json, django
from django.conf import settings
django.setup()
print(json.dumps({
    "engine": settings.DATABASES["default"]["ENGINE"],
    "eager": settings.CELERY_TASK_ALWAYS_EAGER,
    "embedded": settings.EMBEDDED,
}))
"""


def test_no_environment_means_sqlite_and_in_process_tasks(tmp_path):
    env = bare_environment(DJANGO_SETTINGS_MODULE="portal.settings.base", PORTAL_VAR_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "engine": "django.db.backends.sqlite3",
        "eager": True,
        "embedded": True,
    }
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_production_mode_refuses_to_start_without_a_secret_key(tmp_path):
    env = bare_environment(
        DJANGO_SETTINGS_MODULE="portal.settings.base",
        PORTAL_VAR_DIR=str(tmp_path),
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/portal",
    )
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert "SECRET_KEY must be set" in out.stderr


NEWCOMER_FLOW = """
import sys
import django
django.setup()
from diagnostics.models import Patient, Prediction, Study, User
from diagnostics.services.images import image_validate_upload
from diagnostics.services.patients import patient_create
from diagnostics.services.studies import study_create
from tests.images import jpeg_bytes
import datetime
clinician = User.objects.get(username="clinician")
patient = patient_create(user=clinician, medical_record_number="1", name="A", birth_date=datetime.date(2021, 1, 1))
upload = image_validate_upload(filename="x.jpeg", data=jpeg_bytes())
study = study_create(user=clinician, patient=patient, uploads=[upload])
study.refresh_from_db()
prediction = Prediction.objects.get(image__study=study)
count = Prediction.objects.filter(image__study=study).count()
print("tensorflow" in sys.modules, bool(prediction.heatmap), study.status, count)
"""


def test_newcomer_setup_predicts_in_process_with_the_bundled_model(tmp_path, default_model_dir):
    """What `make run` does before starting the server: migrate, demo users, bundled model; then a study is
    assessed in the web process, with its heatmap, and TensorFlow is never imported."""
    env = bare_environment(
        DJANGO_SETTINGS_MODULE="portal.settings.base",
        PORTAL_VAR_DIR=str(tmp_path),
        DEFAULT_MODEL_DIR=str(default_model_dir),
    )

    def run(*args: str) -> str:
        result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return result.stdout

    run(sys.executable, "manage.py", "migrate", "--noinput")
    setup = run(sys.executable, "manage.py", "setup_demo")
    assert "clinician / " in setup and "Activated the bundled model" in setup
    assert run(sys.executable, "-c", NEWCOMER_FLOW).split()[-4:] == ["False", "True", "done", "1"]
    assert (tmp_path / "portal.sqlite3").is_file()


def test_a_visibility_timeout_shorter_than_training_fails_the_system_check(tmp_path):
    env = bare_environment(
        DJANGO_SETTINGS_MODULE="portal.settings.base",
        PORTAL_VAR_DIR=str(tmp_path),
        CELERY_VISIBILITY_TIMEOUT="3600",
        TRAINING_SOFT_TIME_LIMIT_SECONDS="7200",
    )
    out = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "diagnostics.E001" in out.stderr
