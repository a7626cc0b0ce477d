"""The production stack file is accepted by the Compose client."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent


def compose_command() -> list[str]:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    require_tool(legacy, "a Compose client (neither `docker compose` nor `docker-compose`)")
    return [legacy or "docker-compose"]


@pytest.mark.slow
def test_docker_compose_config_accepts_the_stack():
    env = dict(os.environ, SECRET_KEY="compose-check")
    result = subprocess.run([*compose_command(), "config"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for service in ("db", "redis", "web", "worker-inference", "worker-maintenance", "worker-training", "beat"):
        assert f"  {service}:" in result.stdout
    assert "worker-explain" not in result.stdout  # heatmaps come with the predictions
    assert "appendonly" in result.stdout  # queued work survives a Redis restart
