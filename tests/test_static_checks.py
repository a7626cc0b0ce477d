"""Static security check: bandit finds nothing at medium severity or above in the project's code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # ruff, bandit and mypy as subprocesses

ROOT = Path(__file__).resolve().parent.parent


def test_bandit_is_clean_at_medium_severity():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bandit",
            "-q",
            "-r",
            "portal",
            "diagnostics",
            "worker",
            "ml",
            "-ll",
            "-x",
            "diagnostics/migrations",
            "-f",
            "txt",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
