"""Shared fixtures: the three standing users, images, the active model and a real Celery worker."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.test import APIClient

from diagnostics.models import ModelVersion, User
from diagnostics.services.model_registry import model_version_activate, model_version_register, promotion_gate_get

from .database import clone_test_database, drop_test_database
from .factories import ApiTokenFactory, CareTeamFactory, PatientFactory, UserFactory
from .images import chest_like_pixels, encode, jpeg_bytes
from .storage_server import s3_server, s3_storage  # noqa: F401 - a real S3 server (rclone serve s3) and a bucket per test
from .worker import CeleryWorker, running_worker

# A request as htmx sends it (the pages answer with a fragment).
HTMX = {"HTTP_HX_REQUEST": "true"}


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """A run that leaves markers out (`-m "not e2e and not slow and not browser"`, make test-fast) does not even
    import a module marked with one of them as a whole (`pytestmark = pytest.mark.slow` or a list holding it):
    TensorFlow's or a browser driver's import alone would cost seconds in each pytest process."""
    left_out = re.fullmatch(r"not (\w+)((?: and not \w+)*)", (config.option.markexpr or "").strip())
    if collection_path.suffix != ".py" or not collection_path.name.startswith("test_") or left_out is None:
        return None
    excluded = set(re.findall(r"\w+", left_out.group(0))) - {"not", "and"}
    declared = re.search(r"^pytestmark = (.*)$", collection_path.read_text(), re.M)
    marks = set(re.findall(r"pytest\.mark\.(\w+)", declared.group(1))) if declared else set()
    return bool(marks & excluded) or None


def require_tool(found: object, what: str) -> None:
    """A test that drives a tool besides Python (`make test-deps` installs them): without it the test is
    skipped, naming the tool, or fails under CI (CI=true), where a missing tool is a broken set-up."""
    if found:
        return
    message = f"{what} is not installed: `make test-deps` installs it (Debian packages)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def bare_environment(**settings: str) -> dict[str, str]:
    """A process environment with nothing of the portal's configuration but `settings`."""
    env = {key: value for key, value in os.environ.items() if key in ("PATH", "HOME", "LANG")}
    env.update(settings)
    return env


@pytest.fixture(scope="session")
def django_db_setup(
    request, django_test_environment, django_db_blocker, django_db_modify_db_settings
) -> Iterator[None]:
    """pytest-django's test database, copied from a migrated template instead of migrated (tests/database.py):
    each run, and each pytest-xdist process (`_gw0`, `_gw1` suffixes), still gets a database of its own."""
    from pytest_django.fixtures import _get_databases_for_setup

    _aliases, serialized = _get_databases_for_setup(request.session.items)
    with django_db_blocker.unblock():
        original_name = clone_test_database(verbosity=request.config.option.verbose, serialize=bool(serialized))
    yield
    with django_db_blocker.unblock():
        drop_test_database(original_name)


@pytest.fixture(autouse=True)
def force_login_passes_two_factor(request, monkeypatch) -> None:
    """A test client's `force_login` of someone who must pass two-factor sign-in (administrators) also marks
    the session verified, with a real confirmed authenticator (tests/two_factor.py): the many tests of what an
    administrator may do need not type codes. Tests marked `two_factor` get Django's plain force_login;
    two-factor sign-in itself is tested through its pages."""
    if request.node.get_closest_marker("two_factor"):
        return
    from django.test.client import ClientMixin

    from diagnostics.integrations.sign_in.two_factor import two_factor_required

    from .two_factor import mark_client_verified

    plain_force_login = ClientMixin.force_login

    def force_login(self, user, backend=None):  # type: ignore[no-untyped-def]
        plain_force_login(self, user, backend)
        if isinstance(user, User) and two_factor_required(user):
            mark_client_verified(self, user)

    monkeypatch.setattr(ClientMixin, "force_login", force_login)


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path_factory) -> Path:
    """Every test stores its uploads in a folder of its own (the workers it starts get it from the
    environment, tests/worker.py), so no test sees another's files; it is not inside tmp_path, so a
    test's own tmp_path stays empty."""
    settings.MEDIA_ROOT = tmp_path_factory.mktemp("media")
    return settings.MEDIA_ROOT


@pytest.fixture
def team(db):
    return CareTeamFactory(name="Paediatrics A")


@pytest.fixture
def other_team(db):
    return CareTeamFactory(name="Paediatrics B")


@pytest.fixture
def owner(team) -> User:
    """The clinician who registers the patient."""
    return UserFactory(username="alice", team=team)


@pytest.fixture
def member(team) -> User:
    """Another clinician of the same care team."""
    return UserFactory(username="bob", team=team)


@pytest.fixture
def outsider(other_team) -> User:
    """A clinician of another care team: must never see the team's patients."""
    return UserFactory(username="charlie", team=other_team)


@pytest.fixture
def patient(team, owner):
    return PatientFactory(team=team, created_by=owner, name="Ada Lovelace", medical_record_number="MRN-A-1")


def login_client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def api_client_for(user: User) -> APIClient:
    """An API client sending a real ApiToken that acts as `user` (a clinician in most tests).

    The row comes from ApiTokenFactory: api_token_issue gives tokens only to API client accounts.
    """
    key = f"pdp_{secrets.token_urlsafe(6)[:8]}{secrets.token_urlsafe(32)}"
    ApiTokenFactory(user=user, key=key)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def jpeg_upload(name: str = "chest.jpeg", seed: int = 0) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, jpeg_bytes(seed=seed), content_type="image/jpeg")


@pytest.fixture
def default_model_dir() -> Path:
    model_dir = Path(settings.DEFAULT_MODEL_DIR)
    assert (model_dir / "manifest.json").is_file(), f"the bundled model is missing from {model_dir}"
    return model_dir


@pytest.fixture
def active_model(db, default_model_dir) -> ModelVersion:
    """The model bundled with the repository, registered and active."""
    return model_version_activate(model_version=model_version_register(artifact_dir=default_model_dir))


def calibrated(model_version: ModelVersion, interval: tuple[float, float] = (0.02, 0.045)) -> ModelVersion:
    """`model_version` as if its manifest recorded the 95 % interval of its cross-fitted calibration error on
    external/ (metrics.external.ece_crossfit_ci95, which registration copies to the row): with the upper end
    within ModelVersion.PROBABILITY_MAX_ECE its score is a probability. Tests about the wording of a calibrated
    score use it, so that they do not hang on the bundled model's own figure."""
    metrics = dict(model_version.metrics)
    metrics["external"] = {**(metrics.get("external") or {}), "ece_crossfit_ci95": list(interval)}
    model_version.metrics = metrics
    model_version.manifest = {**model_version.manifest, "metrics": metrics}
    model_version.save(update_fields=["metrics", "manifest"])
    return model_version


@pytest.fixture
def celery_worker(django_db_setup, django_db_blocker) -> Iterator[CeleryWorker]:
    """A real `celery worker` process on the test database and the test Redis database.

    Function-scoped so that a test can kill it; it is torn down before the test
    database is dropped, because it depends on django_db_setup.
    """
    with running_worker() as worker:
        yield worker


def copy_model_artifact(source: Path, destination: Path, *, version_suffix: str) -> Path:
    """A second registrable artifact: the same model bytes under another version name."""
    import json
    import shutil

    shutil.copytree(source, destination)
    manifest_path = destination / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["version"] = f"{manifest['version']}-{version_suffix}"
    manifest_path.write_text(json.dumps(manifest))
    return destination


# Fixtures for the model lifecycle: a fixed evaluation set, the promotion gate, a tiny training dataset.


@pytest.fixture
def evaluation_dir(tmp_path) -> Path:
    """A small fixed evaluation set in the standard layout (synthetic films, both classes)."""
    root = tmp_path / "gate-set"
    for label, seeds in (("NORMAL", range(0, 6)), ("PNEUMONIA", range(100, 106))):
        (root / label).mkdir(parents=True)
        for seed in seeds:
            (root / label / f"film{seed}.jpeg").write_bytes(jpeg_bytes(size=128, seed=seed))
    return root


@pytest.fixture
def gate(evaluation_dir, settings):
    """The gate on the 12 synthetic films, for the comparison with the active model and the pages: the set's
    minimum size and the floors are lowered to what 12 drawn films allow (tests/test_promotion_gate.py tests
    them at their defaults)."""
    settings.PROMOTION_MIN_EVALUATION_FILMS = 12
    settings.PROMOTION_MIN_SENSITIVITY = 0.0
    settings.PROMOTION_MIN_AUC = 0.0
    gate = promotion_gate_get()
    gate.evaluation_data_dir = str(evaluation_dir)
    gate.save()
    return gate


def write_dataset(root: Path, per_class: int = 12) -> Path:
    """A tiny dataset in the Kermany layout, file names carrying patients as the real one does."""
    for index in range(per_class):
        normal = chest_like_pixels(64, seed=index)
        pneumonia = chest_like_pixels(64, seed=1000 + index)
        pneumonia[20:44, 12:28] = 230  # a bright 'consolidation' in one lung
        (root / "train" / "NORMAL").mkdir(parents=True, exist_ok=True)
        (root / "train" / "PNEUMONIA").mkdir(parents=True, exist_ok=True)
        (root / "train" / "NORMAL" / f"IM-{index:04d}-0001.jpeg").write_bytes(encode(normal, "JPEG"))
        (root / "train" / "PNEUMONIA" / f"person{index}_bacteria_{index}.jpeg").write_bytes(encode(pneumonia, "JPEG"))
    return root


@pytest.fixture
def dataset(tmp_path, settings):
    settings.PNEUMONIA_DATA_DIR = str(write_dataset(tmp_path / "data"))
    settings.MODEL_DIR = tmp_path / "models"
    return Path(settings.PNEUMONIA_DATA_DIR)
