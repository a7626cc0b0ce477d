"""Starts the test OpenID Connect provider (oidc_provider/) as a separate process, and points the portal at it."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from .slapd import free_port, stop_process

ROOT = Path(__file__).resolve().parents[3]


@dataclass
class Provider:
    issuer: str
    client_id: str
    client_secret: str
    process: subprocess.Popen[bytes]
    log: Path

    def portal_settings(self) -> dict[str, object]:
        """The settings docs/operations.md lists for an OpenID Connect provider (as the environment sets them)."""
        return {
            "SIGN_IN_METHODS": ["oidc"],
            "LOCAL_SIGN_IN_BREAK_GLASS_ONLY": True,
            "AUTHENTICATION_BACKENDS": [
                "axes.backends.AxesStandaloneBackend",
                "diagnostics.integrations.sign_in.oidc.ProviderBackend",
                "diagnostics.integrations.sign_in.local.LocalAccountBackend",
            ],
            "OIDC_PROVIDER_NAME": "Example Children's Hospital sign-in",
            "OIDC_ISSUER": self.issuer,
            "OIDC_RP_CLIENT_ID": self.client_id,
            "OIDC_RP_CLIENT_SECRET": self.client_secret,
            "OIDC_OP_AUTHORIZATION_ENDPOINT": f"{self.issuer}/authorize/",
            "OIDC_OP_TOKEN_ENDPOINT": f"{self.issuer}/token/",
            "OIDC_OP_USER_ENDPOINT": f"{self.issuer}/userinfo/",
            "OIDC_OP_JWKS_ENDPOINT": f"{self.issuer}/.well-known/jwks.json",
            "OIDC_OP_END_SESSION_ENDPOINT": f"{self.issuer}/logout/",
            "OIDC_ADMIN_GROUPS": ["portal-admins"],
            "OIDC_CLINICIAN_GROUPS": ["portal-clinicians"],
            "OIDC_TEAM_GROUPS": {"ward-picu": "PICU", "ward-nicu": "NICU"},
        }


def provider_start(workdir: Path, redirect_bases: list[str]) -> Provider:
    port = free_port()
    client_id, client_secret = "chest-xray-portal", secrets.token_urlsafe(24)
    log = workdir / "provider.log"
    command = [
        sys.executable,
        "-m",
        "tests.integrations.sign_in.oidc_provider",
        "--port",
        str(port),
        "--db",
        str(workdir / "provider.sqlite3"),
        "--client-id",
        client_id,
        "--client-secret",
        client_secret,
    ]
    for base in redirect_bases:
        command += ["--redirect-base", base]
    process = subprocess.Popen(command, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT)  # noqa: S603
    issuer = f"http://127.0.0.1:{port}/o"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the OIDC provider exited: {log.read_text()[-3000:]}")
        try:
            if requests.get(f"{issuer}/.well-known/openid-configuration", timeout=2).status_code == 200:
                return Provider(issuer, client_id, client_secret, process, log)
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the OIDC provider did not answer within 60 s: {log.read_text()[-3000:]}")


def provider_stop(provider: Provider) -> None:
    stop_process(provider.process)
