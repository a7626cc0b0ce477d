"""The systemd units (deploy/systemd) run the same processes as docker-compose.yml, each restarted
whatever ends it, and together they consume every queue the tasks are routed to."""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path

import yaml

from worker.queues import ROUTES

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "deploy" / "systemd"


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


def _compose_argv(command: list[str]) -> tuple[str, ...]:
    """A compose command as run with nothing set in .env: ${NAME:-default} becomes the default."""
    return tuple(re.sub(r"\$\{(\w+):-([^}]*)\}", r"\2", word) for word in command)


def _unit_argv(service: configparser.SectionProxy) -> list[str]:
    """A unit's ExecStart with ${NAME} taken from its Environment= defaults (the EnvironmentFile may override)."""
    defaults = dict(item.split("=", 1) for item in shlex.split(service.get("Environment", "")))
    argv = shlex.split(service["ExecStart"])
    return [re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], word) for word in argv]


def _compose_services() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def test_every_unit_restarts_and_runs_what_compose_runs():
    compose = _compose_services()
    compose_commands = {_compose_argv(s["command"]) for s in compose.values() if isinstance(s.get("command"), list)}
    target = _unit(UNITS / "pneumonia-portal.target")
    wanted = set(target["Unit"]["Wants"].split())
    services = sorted(UNITS.glob("*.service"))
    assert {p.name for p in services} == wanted
    consumed: set[str] = set()
    for path in services:
        service = _unit(path)["Service"]
        assert service["Restart"] == "always" and service["EnvironmentFile"] == "/etc/pneumonia-portal/env"
        argv = _unit_argv(service)
        argv[0] = Path(argv[0]).name  # the virtualenv's binary
        if argv[0] == "gunicorn":
            argv[argv.index("--bind") + 1] = "0.0.0.0:8000"  # behind a reverse proxy here, published by compose
        assert tuple(argv) in compose_commands, f"{path.name}: {argv} is not a compose command"
        if "-Q" in argv:
            consumed.add(argv[argv.index("-Q") + 1])
    assert consumed == {route["queue"] for route in ROUTES.values()}


def _flag(argv: list[str] | tuple[str, ...], name: str) -> int:
    return int(argv[argv.index(name) + 1])


def test_every_long_lived_process_gives_memory_back():
    """Web workers are replaced after --max-requests (with jitter) and Celery pool processes after
    --max-tasks-per-child / --max-memory-per-child, in compose, the units and the Makefile alike."""
    compose = _compose_services()
    web = _compose_argv(compose["web"]["command"])
    assert _flag(web, "--max-requests") == 1000 and _flag(web, "--max-requests-jitter") == 100
    assert web[web.index("--config") + 1] == "python:portal.gunicorn"
    for name in ("worker-inference", "worker-maintenance"):
        argv = _compose_argv(compose[name]["command"])
        assert _flag(argv, "--max-tasks-per-child") == 1000, name
        assert _flag(argv, "--max-memory-per-child") == 1024 * 1024, name  # KiB
    assert _flag(_compose_argv(compose["worker-training"]["command"]), "--max-tasks-per-child") == 1
    # The values are the environment's: compose takes them from .env, with these defaults.
    assert "${GUNICORN_MAX_REQUESTS:-1000}" in compose["web"]["command"]
    assert "${WORKER_MAX_MEMORY_PER_CHILD_KB:-1048576}" in compose["worker-inference"]["command"]

    for path in UNITS.glob("*.service"):
        service = _unit(path)["Service"]
        argv = _unit_argv(service)
        if "gunicorn" in argv[0]:
            assert "${GUNICORN_MAX_REQUESTS}" in service["ExecStart"]
            assert _flag(argv, "--max-requests") == 1000 and _flag(argv, "--max-requests-jitter") == 100
        elif "worker" in argv and "-Q" in argv:
            assert _flag(argv, "--max-tasks-per-child") >= 1, path.name
            if argv[argv.index("-Q") + 1] != "training":
                assert _flag(argv, "--max-memory-per-child") == 1024 * 1024, path.name

    makefile = (ROOT / "Makefile").read_text()
    for target in ("worker:", "worker-maintenance:", "worker-training:"):
        recipe = makefile.split(f"\n{target}", 1)[1].split("\n\n", 1)[0]
        assert "--max-tasks-per-child" in recipe or "$(WORKER_LIMITS)" in recipe, target


def test_a_gunicorn_worker_above_its_memory_limit_is_replaced_after_its_request():
    from portal import gunicorn

    class Worker:
        pid, alive = 1234, True

        class log:  # noqa: N801 - gunicorn's attribute name
            @staticmethod
            def warning(*args: object) -> None:
                pass

    worker = Worker()
    limit = gunicorn.MAX_WORKER_RSS_MB
    try:
        gunicorn.MAX_WORKER_RSS_MB = int(gunicorn.resident_mb()) + 512
        gunicorn.post_request(worker, None, None, None)
        assert worker.alive  # below the limit: keeps serving
        gunicorn.MAX_WORKER_RSS_MB = 1
        gunicorn.post_request(worker, None, None, None)
        assert not worker.alive  # above it: exits after this request, the arbiter forks a fresh one
    finally:
        gunicorn.MAX_WORKER_RSS_MB = limit
    assert gunicorn.resident_mb() > 10
