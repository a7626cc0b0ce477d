"""The systemd units (deploy/systemd) run the same processes as docker-compose.yml, each restarted
whatever ends it, and together they consume every queue the tasks are routed to."""

from __future__ import annotations

import configparser
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


def test_every_unit_restarts_and_runs_what_compose_runs():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    compose_commands = {tuple(s["command"]) for s in compose.values() if isinstance(s.get("command"), list)}
    target = _unit(UNITS / "pneumonia-portal.target")
    wanted = set(target["Unit"]["Wants"].split())
    services = sorted(UNITS.glob("*.service"))
    assert {p.name for p in services} == wanted
    consumed: set[str] = set()
    for path in services:
        service = _unit(path)["Service"]
        assert service["Restart"] == "always" and service["EnvironmentFile"] == "/etc/pneumonia-portal/env"
        argv = shlex.split(service["ExecStart"])
        argv[0] = Path(argv[0]).name  # the virtualenv's binary
        if argv[0] == "gunicorn":
            argv[argv.index("--bind") + 1] = "0.0.0.0:8000"  # behind a reverse proxy here, published by compose
        assert tuple(argv) in compose_commands, f"{path.name}: {argv} is not a compose command"
        if "-Q" in argv:
            consumed.add(argv[argv.index("-Q") + 1])
    assert consumed == {route["queue"] for route in ROUTES.values()}
