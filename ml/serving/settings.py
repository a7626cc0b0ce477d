"""Where the film folders are: a folder from a command-line flag, else an environment variable, never a
hard-coded path. Shared by every ``python -m ml`` command that reads ``<data>/<split>/{NORMAL,PNEUMONIA}``
(``ml.serving.films``), serving's variant check and training's commands alike.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DATA_DIR_ENV = "PNEUMONIA_DATA_DIR"


def add_data_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help=f"dataset root with <split>/NORMAL,PNEUMONIA (default ${DATA_DIR_ENV})")


def require_dir(cli_value: str | None, env_name: str, *, what: str) -> Path:
    path = resolve_dir(cli_value, env_name, required=True, what=what)
    assert path is not None  # resolve_dir exits when a required directory is missing
    return path


def resolve_dir(cli_value: str | None, env_name: str, *, required: bool, what: str) -> Path | None:
    """A directory from a CLI flag, else the environment; never a hard-coded path."""
    value = cli_value or os.environ.get(env_name)
    if not value:
        if required:
            raise SystemExit(f"{what} is not configured: pass the flag or set {env_name}.")
        return None
    path = Path(value).expanduser()
    if required and not path.is_dir():
        raise SystemExit(f"{what} {path} does not exist (from flag or {env_name}).")
    return path


def require_data_dir(cli_value: str | None) -> Path:
    """The dataset root from --data-dir, else $PNEUMONIA_DATA_DIR; exits with the reason when missing."""
    return require_dir(cli_value, DATA_DIR_ENV, what="Data directory")
