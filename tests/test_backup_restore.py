"""Backup and restore that lose nothing (issue 34, item 6): a populated portal is backed up with
`manage.py backup`, restored with `manage.py restore` (a separate process, as an operator runs it) into a
fresh PostgreSQL database and an empty folder or bucket, and every row, file and audit event is back, the
audit log's triggers included, and the chain verifies."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg2
import pytest
from django.conf import settings
from django.core.files.storage import default_storage
from django.core.management import call_command
from psycopg2 import sql

from diagnostics.audit_chain import chain_verify
from diagnostics.models import Image, ModelVersion, Prediction, Study
from diagnostics.services.feedback import acknowledgement_record, feedback_record
from diagnostics.services.inference import study_run_inference
from diagnostics.services.model_registry import model_version_activate, model_version_register

from .conftest import copy_model_artifact
from .factories import StudyFactory
from .images import encode, jpeg_bytes

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _admin_connection(database: str = "postgres"):  # noqa: ANN202 - psycopg2's connection
    db = settings.DATABASES["default"]
    connection = psycopg2.connect(dbname=database, user=db["USER"], host=db["HOST"], port=db["PORT"])
    connection.autocommit = True
    return connection


@pytest.fixture
def fresh_database() -> Iterator[str]:
    """An empty PostgreSQL database of this test's own on the test server, dropped afterwards."""
    name = f"restore_{uuid.uuid4().hex[:12]}"
    connection = _admin_connection()
    with connection.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield name
    with connection.cursor() as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    connection.close()


def populate(owner, patient, tmp_path: Path) -> ModelVersion:  # noqa: ANN001
    """Studies with films, predictions with heatmaps (the inference service, as a worker runs it), a refused
    film, readings and acknowledgements, and their audit events; a model registered from its own folder."""
    folder = copy_model_artifact(settings.DEFAULT_MODEL_DIR, tmp_path / "registered-model", version_suffix="bk")
    model_version = model_version_activate(model_version=model_version_register(artifact_dir=folder))
    flat = encode(np.full((256, 256), 128, dtype=np.uint8), "JPEG")  # the input gate refuses a flat film
    two_films = [("a.jpeg", jpeg_bytes(seed=1)), ("b.jpeg", jpeg_bytes(seed=2))]
    studies = [
        StudyFactory(created_by=owner, patient=patient, films=two_films),
        StudyFactory(created_by=owner, patient=patient, seed=3),
        StudyFactory(created_by=owner, patient=patient, films=[("flat.jpeg", flat)]),
    ]
    for study in studies:
        study_run_inference(study_id=study.pk)
    predictions = list(Prediction.objects.select_related("image__study__patient").order_by("pk"))
    scored = [p for p in predictions if p.analysable]
    assert len(scored) == 3 and all(p.heatmap for p in scored), [p.gate_code for p in scored]
    feedback_record(user=owner, prediction=scored[0], agrees=True)
    feedback_record(user=owner, prediction=scored[1], agrees=False, confirmed_label=_other_label(scored[1].label))
    (refused,) = [p for p in predictions if not p.analysable]
    acknowledgement_record(user=owner, prediction=refused, comment="seen")
    assert Study.objects.filter(status=Study.Status.DONE).count() == 3
    return model_version


def _other_label(label: str) -> str:
    return "NORMAL" if label == "PNEUMONIA" else "PNEUMONIA"


def table_rows(database: str) -> dict[str, list[tuple]]:
    """Every row of every table of `database`, in primary-key (first column) order."""
    connection = _admin_connection(database)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
            tables = [name for (name,) in cursor.fetchall()]
            rows = {}
            for table in tables:
                cursor.execute(sql.SQL("SELECT * FROM {} ORDER BY 1").format(sql.Identifier(table)))
                rows[table] = cursor.fetchall()
            return rows
    finally:
        connection.close()


def triggers(database: str) -> list[tuple[str, str]]:
    connection = _admin_connection(database)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT tgrelid::regclass::text, tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2"
            )
            return cursor.fetchall()
    finally:
        connection.close()


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our interpreter and manage.py
        [sys.executable, str(ROOT / "manage.py"), *args], env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip


def target_env(database: str, **storage: str) -> dict[str, str]:
    """The environment of a portal on `database` and the given storage (what the operator sets)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("S3_", "STORAGE_BACKEND"))}
    db = settings.DATABASES["default"]
    env.update(
        DJANGO_SETTINGS_MODULE="portal.settings.test",
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{database}",
        **storage,
    )
    return env


def stored_files() -> dict[str, bytes]:
    """Every film, derivative and heatmap the rows name, with its bytes."""
    names = {n for row in Image.objects.values_list("file", "preview", "window_source") for n in row if n}
    names |= set(Prediction.objects.exclude(heatmap="").values_list("heatmap", flat=True))
    files = {}
    for name in names:
        with default_storage.open(name, "rb") as handle:
            files[name] = handle.read()
    return files


def assert_restored_like_the_original(original: dict[str, list[tuple]], restored_db: str, manifest: dict) -> None:
    """Every table holds the same rows; the audit log the backed-up rows and then the restore's own event."""
    restored = table_rows(restored_db)
    assert restored.keys() == original.keys()
    head = manifest["database"]["audit_head"]["id"]
    for table, rows in original.items():
        if table == "diagnostics_auditevent":
            backed_up = [row for row in rows if row[0] <= head]
            assert restored[table][: len(backed_up)] == backed_up
            assert len(restored[table]) == len(backed_up) + 1  # the restore's own event, checked below
            continue
        assert restored[table] == rows, table
    assert triggers(restored_db) == triggers(settings.DATABASES["default"]["NAME"])
    connection = _admin_connection(restored_db)
    with connection.cursor() as cursor:
        cursor.execute("SELECT action FROM diagnostics_auditevent WHERE id > %s", [head])
        assert cursor.fetchall() == [("backup.restored",)]
    connection.close()


def assert_audit_log_guarded(database: str) -> None:
    """The append-only trigger and the created_at guard came back with the table."""
    connection = _admin_connection(database)
    try:
        with connection.cursor() as cursor:
            with pytest.raises(psycopg2.errors.RaiseException, match="append-only"):
                cursor.execute("UPDATE diagnostics_auditevent SET action = 'edited'")
            with pytest.raises(psycopg2.errors.RaiseException, match="dated by the database"):
                cursor.execute(
                    "INSERT INTO diagnostics_auditevent (created_at, action, object_type, object_id, detail, "
                    "prev_hash, row_hash) VALUES (now() - interval '1 day', 'forged', '', '', '{}', 'x', 'y')"
                )
    finally:
        connection.close()


def test_a_populated_portal_comes_back_whole_into_an_empty_database_and_folder(
    owner, patient, tmp_path, settings, fresh_database
):
    model_version = populate(owner, patient, tmp_path)
    films = stored_files()
    backup = tmp_path / "backup"
    call_command("backup", to=str(backup))
    manifest = json.loads((backup / "manifest.json").read_text())
    original = table_rows(settings.DATABASES["default"]["NAME"])
    listed = {entry["path"]: entry for entry in manifest["files"]}
    assert {f"media/{name}" for name in films} <= {path for path, entry in listed.items() if entry.get("referenced")}
    assert manifest["database"]["row_counts"]["diagnostics_prediction"] == 4
    # The registering host's model folder is lost with the rest: the backup holds it.
    shutil.rmtree(model_version.artifact_path)

    restored_media = tmp_path / "restored-media"
    env = target_env(fresh_database, STORAGE_BACKEND="filesystem", MEDIA_ROOT=str(restored_media))
    result = manage("restore", "--from", str(backup), env=env)
    assert result.returncode == 0, result.stderr
    assert "audit log verified" in result.stdout

    assert_restored_like_the_original(original, fresh_database, manifest)
    for name, content in films.items():
        assert (restored_media / name).read_bytes() == content, name
    assert {p.relative_to(restored_media).as_posix() for p in restored_media.rglob("*") if p.is_file()} == {
        path.removeprefix("media/") for path in listed if path.startswith("media/")
    }
    folder = Path(model_version.artifact_path)
    for source in Path(settings.DEFAULT_MODEL_DIR).iterdir():
        if source.name != "manifest.json":
            assert (folder / source.name).read_bytes() == source.read_bytes(), source.name
    verified = manage("audit_verify", env=env)
    assert verified.returncode == 0 and "Audit log intact" in verified.stdout, verified.stderr
    restored_events = len(table_rows(fresh_database)["diagnostics_auditevent"])
    assert f"Audit log intact: {restored_events} rows" in verified.stdout
    assert_audit_log_guarded(fresh_database)

    # A second restore into the now populated target is refused, and changes nothing.
    before = table_rows(fresh_database)
    again = manage("restore", "--from", str(backup), env=env)
    assert again.returncode != 0 and "not empty" in again.stderr and "tables" in again.stderr
    assert table_rows(fresh_database) == before
    # A damaged backup is refused before anything is touched.
    damaged = next(tmp_path.glob("backup/media/heatmaps/*"))
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"\x00")
    refused = manage("restore", "--from", str(backup), "--force", env=env)
    assert refused.returncode != 0 and "damaged" in refused.stderr and damaged.name in refused.stderr
    assert table_rows(fresh_database) == before
    assert chain_verify().first_break is None


def test_a_portal_on_object_storage_comes_back_whole_into_an_empty_bucket(
    s3_storage, owner, patient, tmp_path, settings, fresh_database
):
    server, bucket = s3_storage
    model_version = populate(owner, patient, tmp_path)
    shutil.rmtree(model_version.artifact_path)  # with object storage the bucket holds the model
    backup = tmp_path / "backup"
    call_command("backup", to=str(backup))
    manifest = json.loads((backup / "manifest.json").read_text())
    original = table_rows(settings.DATABASES["default"]["NAME"])
    assert manifest["storage"] == {"media": "bucket", "models": "storage"}

    target_bucket = server.new_bucket()
    env = target_env(fresh_database, **server.env(target_bucket))
    result = manage("restore", "--from", str(backup), env=env)
    assert result.returncode == 0, result.stderr

    assert_restored_like_the_original(original, fresh_database, manifest)
    keys = server.keys(bucket)
    assert server.keys(target_bucket) == keys and f"models/{model_version.sha256}/model.onnx" in keys
    client = server.client()
    for key in keys:
        assert (
            client.get_object(Bucket=target_bucket, Key=key)["Body"].read()
            == client.get_object(Bucket=bucket, Key=key)["Body"].read()
        ), key
    verified = manage("audit_verify", env=env)
    assert verified.returncode == 0 and "Audit log intact" in verified.stdout, verified.stderr
    assert_audit_log_guarded(fresh_database)
    # The same backup restored over it with --force: the same rows again, the chain still whole.
    forced = manage("restore", "--from", str(backup), "--force", env=env)
    assert forced.returncode == 0, forced.stderr
    assert server.keys(target_bucket) == keys
    assert manage("audit_verify", env=env).returncode == 0


EMBEDDED_STUDY = """
import datetime, django
django.setup()
from diagnostics.models import Prediction, User
from diagnostics.services.feedback import feedback_record
from diagnostics.services.images import image_validate_upload
from diagnostics.services.patients import patient_create
from diagnostics.services.studies import study_create
from tests.images import jpeg_bytes
clinician = User.objects.get(username="clinician")
patient = patient_create(user=clinician, medical_record_number="1", name="A", birth_date=datetime.date(2021, 1, 1))
upload = image_validate_upload(filename="x.jpeg", data=jpeg_bytes())
study = study_create(user=clinician, patient=patient, uploads=[upload])
prediction = Prediction.objects.select_related("image__study__patient").get(image__study=study)
feedback_record(user=clinician, prediction=prediction, agrees=True)
print(prediction.heatmap.name)
"""


def sqlite_rows(path: Path) -> dict[str, list[tuple]]:
    import sqlite3

    connection = sqlite3.connect(path)
    try:
        tables = [n for (n,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1")]
        return {table: connection.execute(f'SELECT * FROM "{table}" ORDER BY 1').fetchall() for table in tables}  # noqa: S608
    finally:
        connection.close()


@pytest.mark.django_db(transaction=False)
def test_the_embedded_default_is_backed_up_with_sqlites_backup_api_and_restored(tmp_path, default_model_dir):
    """The embedded default (SQLite under var/, MEDIA_ROOT under it) after `make run`'s set-up and one study
    assessed in process: backed up and restored into another, empty var/ folder."""
    from .conftest import bare_environment

    def env_for(var: Path) -> dict[str, str]:
        return bare_environment(
            DJANGO_SETTINGS_MODULE="portal.settings.base", PORTAL_VAR_DIR=str(var),
            DEFAULT_MODEL_DIR=str(default_model_dir), PYTHONPATH=str(ROOT),
        )  # fmt: skip

    source, target = tmp_path / "var", tmp_path / "restored-var"
    for command in (["migrate", "--noinput"], ["setup_demo"]):
        assert manage(*command, env=env_for(source)).returncode == 0
    study = subprocess.run(  # noqa: S603
        [sys.executable, "-c", EMBEDDED_STUDY], cwd=ROOT, env=env_for(source), capture_output=True, text=True
    )
    assert study.returncode == 0, study.stderr
    heatmap = study.stdout.split()[-1]
    backup = manage("backup", "--to", str(tmp_path / "backup"), env=env_for(source))
    assert backup.returncode == 0, backup.stderr
    manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    assert manifest["database"]["engine"] == "sqlite" and f"media/{heatmap}" in {f["path"] for f in manifest["files"]}

    restored = manage("restore", "--from", str(tmp_path / "backup"), env=env_for(target))
    assert restored.returncode == 0, restored.stderr
    original, copy = sqlite_rows(source / "portal.sqlite3"), sqlite_rows(target / "portal.sqlite3")
    assert copy.keys() == original.keys()
    for table in original:
        if table not in ("diagnostics_auditevent", "sqlite_sequence"):
            assert copy[table] == original[table], table
    head = manifest["database"]["audit_head"]["id"]
    events = copy["diagnostics_auditevent"]
    assert events[:-1] == [row for row in original["diagnostics_auditevent"] if row[0] <= head] and len(events) > 3
    for name in {f["path"].removeprefix("media/") for f in manifest["files"] if f["path"].startswith("media/")}:
        assert (target / "media" / name).read_bytes() == (source / "media" / name).read_bytes()
    verified = manage("audit_verify", env=env_for(target))
    assert verified.returncode == 0 and "Audit log intact" in verified.stdout, verified.stderr
    refused = manage("restore", "--from", str(tmp_path / "backup"), env=env_for(target))
    assert refused.returncode != 0 and "not empty" in refused.stderr
