"""Fixtures of the DICOM integrations (in and out): a registered PACS and the receiver's inbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from diagnostics.models import DicomPeer, User

from ..factories import UserFactory


@pytest.fixture(autouse=True)
def inbox(settings, tmp_path) -> Path:
    settings.DICOM_INBOX_DIR = tmp_path / "inbox"
    return settings.DICOM_INBOX_DIR


@pytest.fixture
def peer(team) -> DicomPeer:
    service = UserFactory(username="ward-pacs", team=team, role=User.Role.API_CLIENT)
    return DicomPeer.objects.create(
        ae_title="WARDPACS", team=team, service_user=service, host="127.0.0.1", port=4242, results_ae_title="ORTHANC",
        allowed_networks="127.0.0.1",
    )
