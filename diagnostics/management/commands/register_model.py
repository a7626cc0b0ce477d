from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from diagnostics.services.model_registry import model_version_activate, model_version_register


class Command(BaseCommand):
    help = "Register a trained model artifact (folder with manifest.json and model.onnx); optionally activate it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("artifact_dir", type=Path)
        parser.add_argument("--activate", action="store_true", help="Make it the active model right away.")

    def handle(self, *args: Any, artifact_dir: Path, activate: bool, **options: Any) -> None:
        try:
            model_version = model_version_register(artifact_dir=artifact_dir)
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from None
        self.stdout.write(f"Registered {model_version.name} ({model_version.architecture}, {model_version.status}).")
        if activate:
            model_version_activate(model_version=model_version)
            self.stdout.write(f"{model_version.name} is now the active model.")
