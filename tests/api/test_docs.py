"""docs/api.md is executed: its sh blocks run in order against a live portal and a real Celery worker."""

from __future__ import annotations

import hashlib
import hmac
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from diagnostics.integrations.webhooks.services import webhook_signature
from diagnostics.models import Feedback, Patient, Study
from tests.images import jpeg_bytes

from ..images import dicom_bytes
from .conftest import issue_client

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", GUIDE.read_text(), flags=re.S | re.M)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_the_guides_curl_examples_work(
    portal_server, admin_user, team, active_model, celery_worker, tmp_path, settings
):
    assert shutil.which("curl"), "the guide's examples need curl"
    script = blocks("sh")
    assert len(script) >= 10, "the guide lost its examples"
    token = issue_client(admin=admin_user, team=team, name="Guide").key
    (tmp_path / "chest.jpeg").write_bytes(jpeg_bytes(seed=7))
    (tmp_path / "study.dcm").write_bytes(dicom_bytes())

    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", "\n".join(script)],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "PORTAL": portal_server, "TOKEN": token, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}\n{celery_worker.log_tail()}"

    patient = Patient.objects.get(medical_record_number="MRN-0042", team=team)
    studies = Study.objects.filter(patient=patient)
    # Multipart (retried once with its key), JSON and DICOM: three studies, not four.
    accession_numbers = sorted(studies.values_list("accession_number", flat=True))
    assert accession_numbers == ["ACC-2024-001", "ACC-2024-002", "ACC-2024-003"]
    assert f"study {studies.get(accession_number='ACC-2024-001').pk} is done" in result.stdout
    assert Feedback.objects.get().comment == "Radiologist concurs"
    # The error example shows the documented shape.
    assert '"code":"validation_error"' in result.stdout and '"fields":{"name":' in result.stdout


def test_the_guides_signature_check_accepts_the_portals_signatures_only():
    [source] = blocks("python")
    namespace: dict = {}
    exec(compile(source, str(GUIDE), "exec"), namespace)  # noqa: S102 - our own documentation's code
    verify = namespace["verify_portal_signature"]
    body, timestamp = b'{"event":"study.finished","study_id":1}', int(time.time())
    signature = webhook_signature(secret="s3cret", timestamp=timestamp, body=body)
    assert verify("s3cret", str(timestamp), body, signature)
    assert not verify("s3cret", str(timestamp), body + b" ", signature)
    assert not verify("other", str(timestamp), body, signature)
    stale = timestamp - 3600
    assert not verify("s3cret", str(stale), body, webhook_signature(secret="s3cret", timestamp=stale, body=body))
    # And the portal's signature is what the guide says it is.
    expected = hmac.new(b"s3cret", f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert signature == f"sha256={expected}"
