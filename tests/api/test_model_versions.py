"""GET /api/v1/model-versions/: the operating point and whether the score is a probability; the promotion
gate's refusal in words (issue 29, items 1 and 6)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from diagnostics.models import AuditEvent, ModelVersion
from diagnostics.services.model_registry import promotion_gate_get

from ..factories import ModelVersionFactory
from ..test_model_registry import register_copy

pytestmark = pytest.mark.django_db

OPERATING_POINT = {
    "threshold": 0.43,
    "rule": "highest threshold with sensitivity >= 0.95 on external/",
    "target_sensitivity": 0.95,
    "expected": {
        "sensitivity": 0.946,
        "sensitivity_ci95": [0.911, 0.976],
        "specificity": 0.887,
        "specificity_ci95": [0.820, 0.940],
    },
    "expected_method": "cross-fitted on external/",
}


def session_client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_a_model_version_carries_its_operating_point_and_whether_its_score_is_a_probability(owner):
    model = ModelVersionFactory(
        manifest={"operating_point": OPERATING_POINT},
        metrics={"external": {"ece_crossfit": 0.03, "ece_crossfit_ci95": [0.02, 0.045]}},
    )
    body = session_client(owner).get(f"/api/v1/model-versions/{model.pk}/").json()
    assert body["operating_point"] == OPERATING_POINT
    assert body["probability_calibrated"] is True


def test_without_an_operating_point_or_an_ece_interval_both_say_so(owner):
    model = ModelVersionFactory(metrics={"external": {"ece": 0.01, "ece_crossfit": 0.02}})
    body = session_client(owner).get(f"/api/v1/model-versions/{model.pk}/").json()
    assert body["operating_point"] is None
    assert body["probability_calibrated"] is False


def test_a_malformed_operating_point_reads_as_nulls_not_as_something_else(owner):
    model = ModelVersionFactory(
        manifest={"operating_point": {"threshold": "0.4", "expected": {"sensitivity_ci95": [0.9]}}}
    )
    point = session_client(owner).get(f"/api/v1/model-versions/{model.pk}/").json()["operating_point"]
    assert point["threshold"] is None and point["rule"] == "" and point["expected"]["sensitivity_ci95"] is None


def test_the_schema_describes_both_fields(owner):
    schema = APIClient().get("/api/v1/schema/?format=json").json()
    output = schema["components"]["schemas"]["ModelVersionOutput"]["properties"]
    assert output["probability_calibrated"]["readOnly"] is True
    assert "operating_point" in output


def test_a_promotion_on_the_16_film_val_split_is_refused_in_words(
    admin_user, active_model, default_model_dir, tmp_path
):
    folder = tmp_path / "val"
    full_size = Path(__file__).resolve().parents[1] / "fixtures" / "full_size"
    for label, pattern in (("NORMAL", "NORMAL2-*.jpeg"), ("PNEUMONIA", "person*.jpeg")):
        (folder / label).mkdir(parents=True)
        for film in full_size.glob(pattern):
            shutil.copy2(film, folder / label / film.name)
    gate = promotion_gate_get()
    gate.evaluation_data_dir = str(folder)
    gate.save()
    candidate = register_copy(default_model_dir, tmp_path, "c")
    response = session_client(admin_user).post(f"/api/v1/model-versions/{candidate.pk}/promote/")
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "has 16 films (8 with pneumonia, 8 normal); the gate needs at least 300 films" in message
    assert "roc_auc" not in message
    candidate.refresh_from_db()
    assert candidate.status == ModelVersion.Status.CANDIDATE
    assert AuditEvent.objects.get(action="model.promotion_refused").actor == admin_user
