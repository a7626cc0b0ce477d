"""Create a demo care team, a clinician and an admin, and activate the bundled model.

For a first look on a developer's machine. Passwords are generated, printed once
and kept in var/demo_credentials.txt (readable by the owner only).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from diagnostics.models import CareTeam, ModelVersion, User
from diagnostics.selectors import model_version_active
from diagnostics.services.model_registry import model_version_activate, model_version_register
from ml.serving.artifacts import read_manifest

DEMO_USERS = (
    ("clinician", User.Role.CLINICIAN, False),
    ("admin", User.Role.ADMIN, True),
)


class Command(BaseCommand):
    help = "Create demo users (clinician, admin) in a 'Demo Ward' team and activate the bundled model."

    def handle(self, *args: Any, **options: Any) -> None:
        team, _ = CareTeam.objects.get_or_create(name="Demo Ward")
        credentials_file = settings.VAR_DIR / "demo_credentials.txt"
        lines = []
        for username, role, is_admin in DEMO_USERS:
            user, created = User.objects.get_or_create(
                username=username, defaults={"role": role, "team": team, "is_staff": is_admin, "is_superuser": is_admin}
            )
            if created:
                password = secrets.token_urlsafe(12)
                user.set_password(password)
                user.save()
                lines.append(f"{username} / {password}")
        if lines:
            settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
            with credentials_file.open("a") as handle:
                handle.write("\n".join(lines) + "\n")
            credentials_file.chmod(0o600)
            self.stdout.write(f"Demo users created (also saved in {credentials_file}):")
            for line in lines:
                self.stdout.write(f"  {line}")
        else:
            self.stdout.write(f"Demo users already exist; their passwords are in {credentials_file}.")
        self._activate_bundled_model()

    def _activate_bundled_model(self) -> None:
        model_dir = settings.DEFAULT_MODEL_DIR
        active = model_version_active()
        if active is not None and not _bundled_and_updated(active, model_dir):
            return
        if not (model_dir / "manifest.json").is_file():
            self.stderr.write(
                f"No bundled model at {model_dir}: studies will fail with 'no active model' until one is registered."
            )
            return
        try:
            model_version = model_version_register(artifact_dir=model_dir)
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from None
        model_version_activate(model_version=model_version)
        replaced = f" (in place of {active.name}, whose files the code update replaced)" if active else ""
        self.stdout.write(f"Activated the bundled model {model_version.name}{replaced}.")


def _bundled_and_updated(active: ModelVersion, model_dir: Path) -> bool:
    """Whether the active model is the bundled one and a code update has since replaced its files (the
    default model re-exported with its heatmap output, for one): it no longer loads, so the new one takes over."""
    if Path(active.artifact_path).resolve() != Path(model_dir).resolve():
        return False
    try:
        return bool(read_manifest(model_dir)["onnx_sha256"] != active.sha256)
    except (OSError, ValueError, KeyError):
        return False
