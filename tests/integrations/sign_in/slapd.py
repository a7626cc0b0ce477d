"""A real OpenLDAP server for the tests: Debian's slapd in a temporary folder on a free port of 127.0.0.1.

Its configuration (slapd-config.ldif) and its people and groups (directory.ldif) are loaded with slapadd
before it starts; it runs in the foreground of a child process and is stopped with it.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.chaos import free_port

HERE = Path(__file__).resolve().parent
SLAPD = shutil.which("slapd") or ("/usr/sbin/slapd" if Path("/usr/sbin/slapd").is_file() else None)
SLAPADD = shutil.which("slapadd") or ("/usr/sbin/slapadd" if Path("/usr/sbin/slapadd").is_file() else None)
BASE = "dc=hospital,dc=example"


@dataclass
class Directory:
    uri: str
    root_dn: str
    root_password: str
    process: subprocess.Popen[bytes]

    def admin_connection(self):  # type: ignore[no-untyped-def]
        import ldap

        connection = ldap.initialize(self.uri)
        connection.simple_bind_s(self.root_dn, self.root_password)
        return connection


def directory_start(workdir: Path) -> Directory:
    assert SLAPD and SLAPADD
    root_password = secrets.token_urlsafe(12)
    (workdir / "slapd.d").mkdir()
    (workdir / "data").mkdir()
    config = (
        (HERE / "slapd-config.ldif")
        .read_text()
        .replace("{workdir}", str(workdir))
        .replace("{root_password}", root_password)
    )
    (workdir / "config.ldif").write_text(config)
    for database, ldif in (("0", workdir / "config.ldif"), ("1", HERE / "directory.ldif")):
        subprocess.run(  # noqa: S603 - fixed arguments
            [SLAPADD, "-q", "-n", database, "-F", str(workdir / "slapd.d"), "-l", str(ldif)],
            check=True,
            capture_output=True,
            timeout=30,
        )
    port = free_port()
    uri = f"ldap://127.0.0.1:{port}"
    log = (workdir / "slapd.log").open("wb")
    process = subprocess.Popen(  # noqa: S603 - fixed arguments
        [SLAPD, "-d", "0", "-F", str(workdir / "slapd.d"), "-h", f"{uri}/"], stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"slapd exited ({process.returncode}): {(workdir / 'slapd.log').read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.1)
    else:
        process.kill()
        raise RuntimeError("slapd did not listen within 20 s")
    return Directory(uri=uri, root_dn=f"cn=admin,{BASE}", root_password=root_password, process=process)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Terminate a fixture's server; killed when it has not exited 10 s later."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def directory_stop(directory: Directory) -> None:
    stop_process(directory.process)
