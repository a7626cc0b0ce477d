"""The GPU override: the Compose client accepts it, and only the two ML workers reserve GPUs."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from .test_deployment_files import ROOT, compose_command

GPU_WORKERS = ("worker-inference", "worker-training")


def _services(config: str) -> dict[str, dict]:
    import yaml  # PyYAML comes with drf-spectacular

    services: dict[str, dict] = yaml.safe_load(config)["services"]
    return services


@pytest.mark.slow
def test_the_gpu_override_reserves_gpus_for_the_ml_workers_only():
    env = dict(os.environ, SECRET_KEY="compose-check")
    command = [*compose_command(), "-f", "docker-compose.yml", "-f", "docker-compose.gpu.yml", "config"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    services = _services(result.stdout)
    for name in GPU_WORKERS:
        service = services[name]
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"], name
        assert service["build"]["dockerfile"] == "Dockerfile.gpu" and service["image"] == "pneumonia-portal-gpu:latest"
        assert service["command"][:4] == ["celery", "-A", "worker", "worker"], name  # the base file's command
    assert services["worker-inference"]["environment"]["INFERENCE_THREADS"] == "2"
    for name in ("web", "beat", "worker-maintenance"):
        assert "deploy" not in services[name] and services[name]["image"] == "pneumonia-portal:latest", name


def test_the_gpu_requirements_pin_the_cpu_files_tensorflow_and_swap_both_runtimes():
    requirements = (ROOT / "requirements.txt").read_text()
    gpu = (ROOT / "requirements-gpu.txt").read_text()
    tensorflow = re.search(r"^tensorflow-cpu==(\S+)$", requirements, re.MULTILINE)
    assert tensorflow is not None
    assert f"tensorflow[and-cuda]=={tensorflow.group(1)}" in gpu.splitlines()
    assert "-r requirements.txt" in gpu.splitlines()
    assert re.search(r"^onnxruntime-gpu==\S+$", gpu, re.MULTILINE)
    dockerfile = (ROOT / "Dockerfile.gpu").read_text()
    assert "pip uninstall -y tensorflow-cpu onnxruntime" in dockerfile  # one wheel per import package
