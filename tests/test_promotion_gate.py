"""The promotion gate cannot promote an unsafe model (issue 29, item 6).

It let a model with sensitivity 0.625 through: the bundled model on the 16 films of the official val split,
compared with the active model within a tolerance, with no interval and no floor of its own. Now the set must
be of real size and new to the candidate, and the candidate must meet floors of the gate's own at the lower
end of its 95 % patient-level interval, whatever the active model does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from PIL import Image

from diagnostics.models import AuditEvent, ModelVersion
from diagnostics.services.model_registry import model_version_activate, model_version_promote, promotion_gate_get
from diagnostics.services.promotion_gate import (
    GATE_CI_METHOD,
    Floors,
    evaluation_set_read,
    floor_check,
    performance_checks,
    size_check,
)
from ml.serving.artifacts import sha256_file

from .conftest import login_client
from .factories import AdminFactory
from .images import chest_like_pixels, encode
from .test_model_registry import register_copy

pytestmark = pytest.mark.django_db

FULL_SIZE = Path(__file__).resolve().parent / "fixtures" / "full_size"  # the 16 films of the official val split


def val_split(root: Path) -> Path:
    """The 16-film set the old gate was given: the official val split (8 NORMAL, 8 PNEUMONIA)."""
    for label, pattern in (("NORMAL", "NORMAL2-*.jpeg"), ("PNEUMONIA", "person*.jpeg")):
        (root / label).mkdir(parents=True)
        for film in FULL_SIZE.glob(pattern):
            shutil.copy2(film, root / label / film.name)
    return root


def tiny_set(root: Path, *, normal: int, pneumonia: int) -> Path:
    """Tiny films (16 px), enough to count: no model runs on them."""
    for label, count in (("NORMAL", normal), ("PNEUMONIA", pneumonia)):
        (root / label).mkdir(parents=True)
        for index in range(count):
            (root / label / f"IM-{index:04d}-0001.png").write_bytes(encode(chest_like_pixels(16, seed=index), "PNG"))
    return root


def point_gate_at(folder: Path) -> None:
    gate = promotion_gate_get()
    gate.evaluation_data_dir = str(folder)
    gate.save()


def test_the_16_film_val_split_is_refused_before_any_model_runs(active_model, default_model_dir, tmp_path, owner):
    point_gate_at(val_split(tmp_path / "val"))
    candidate = register_copy(default_model_dir, tmp_path, "c")
    with pytest.raises(ValidationError) as refused:
        model_version_promote(model_version=candidate, actor=owner)
    message = " ".join(refused.value.messages)
    assert "has 16 films (8 with pneumonia, 8 normal)" in message
    assert "the gate needs at least 300 films, with both classes" in message
    assert ModelVersion.objects.get(status=ModelVersion.Status.ACTIVE) == active_model
    candidate.refresh_from_db()
    assert candidate.evaluation == {}  # refused on the count alone: no model was run
    event = AuditEvent.objects.get(action="model.promotion_refused")
    assert event.actor == owner and event.detail["passed"] is False
    assert event.detail["evaluation_set"]["films"] == 16
    assert [(c["name"], c["passed"]) for c in event.detail["checks"]] == [
        ("Evaluation set", False),
        ("Films new to the candidate", True),
    ]


def test_the_size_check_wants_the_settings_count_and_both_classes(tmp_path, settings):
    floors = Floors(min_films=300, min_sensitivity=0.9, min_auc=0.92)
    enough = size_check(evaluation_set_read(evaluation_dir=str(tiny_set(tmp_path / "a", normal=120, pneumonia=180))),
                        floors)  # fmt: skip
    assert enough.passed and enough.value == 300
    assert enough.explanation == "300 films (180 with pneumonia, 120 normal): at least 300 films, with both classes."
    one_short = size_check(evaluation_set_read(evaluation_dir=str(tiny_set(tmp_path / "b", normal=119, pneumonia=180))),
                           floors)  # fmt: skip
    assert not one_short.passed and "has 299 films" in one_short.explanation
    one_class = size_check(evaluation_set_read(evaluation_dir=str(tiny_set(tmp_path / "c", normal=0, pneumonia=300))),
                           floors)  # fmt: skip
    assert not one_class.passed and "It lacks one class" in one_class.explanation


@pytest.mark.slow
def test_a_candidate_below_the_sensitivity_floor_is_refused_even_when_the_active_model_is_worse(
    gate, evaluation_dir, default_model_dir, tmp_path, settings
):
    """Same model bytes (same AUC); the candidate's threshold catches half the pneumonia films, the active
    model's none. The comparison passes, the gate's own floor does not."""
    from ml.serving.films import list_images, load_images
    from ml.serving.inference import Predictor

    predictor = Predictor.from_artifact(default_model_dir)
    records = [r for r in list_images(evaluation_dir.parent, evaluation_dir.name) if r.label == 1]
    scores = np.sort(predictor.predict_batch(load_images(records, input_size=predictor.input_size)))
    halfway = float((scores[2] + scores[3]) / 2)  # 3 of the 6 pneumonia films score above it
    assert scores[2] < halfway < scores[3]
    settings.PROMOTION_MIN_SENSITIVITY = 0.90
    active = model_version_activate(model_version=register_copy(default_model_dir, tmp_path, "a", threshold=1.5))
    candidate = register_copy(default_model_dir, tmp_path, "c", threshold=halfway)
    with pytest.raises(ValidationError, match=r"Sensitivity 0.500 \(95 % interval 0.\d+–\d.\d+\): the lower end"):
        model_version_promote(model_version=candidate)
    assert ModelVersion.objects.get(status=ModelVersion.Status.ACTIVE) == active
    detail = AuditEvent.objects.get(action="model.promotion_refused").detail
    assert detail["active"]["sensitivity"] == 0.0 and detail["candidate"]["sensitivity"] == 0.5
    verdict = {check["name"]: check["passed"] for check in detail["checks"]}
    assert verdict == {
        "Evaluation set": True,
        "Films new to the candidate": True,
        "Sensitivity: the gate's floor": False,
        "ROC AUC: the gate's floor": True,  # lowered to 0 by the gate fixture
        "Sensitivity against the active model": True,  # better than the active model's 0.0
        "ROC AUC against the active model": True,
    }


@pytest.mark.slow
def test_with_no_active_model_the_floors_still_apply(gate, default_model_dir, tmp_path, settings):
    """The old gate passed any candidate when no model was active: nothing to compare with."""
    settings.PROMOTION_MIN_SENSITIVITY = 0.90
    candidate = register_copy(default_model_dir, tmp_path, "c", threshold=1.5)  # calls no film pneumonia
    with pytest.raises(ValidationError, match="Sensitivity 0.000 .*under the gate's floor 0.900"):
        model_version_promote(model_version=candidate)
    assert not ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).exists()


def test_the_floors_are_met_at_the_lower_end_of_the_interval_whatever_the_active_model_does():
    floors = Floors(min_films=300, min_sensitivity=0.90, min_auc=0.92)
    candidate = {
        "sensitivity": 0.95,
        "roc_auc": 0.95,
        "ci95": {"sensitivity": [0.92, 0.98], "roc_auc": [0.91, 0.98]},  # AUC point above the floor, lower end under
    }
    worse_active = {"sensitivity": 0.80, "roc_auc": 0.85, "ci95": {}}
    gate = promotion_gate_get()
    checks = performance_checks(candidate=candidate, active=worse_active, active_name="old", gate=gate, floors=floors)
    verdict = {check.name: check.passed for check in checks}
    assert verdict == {
        "Sensitivity: the gate's floor": True,
        "ROC AUC: the gate's floor": False,
        "Sensitivity against the active model": True,
        "ROC AUC against the active model": True,
    }
    auc = checks[1]
    assert (auc.value, auc.interval) == (0.95, (0.91, 0.98))
    assert auc.requirement == "lower end of the 95 % interval at least 0.920"
    assert auc.explanation == (
        "ROC AUC 0.950 (95 % interval 0.910–0.980): the lower end 0.910 is under the gate's floor 0.920 "
        "(a floor of its own, whatever the active model does)."
    )
    # No interval: the floor cannot be shown to be met, so it is not.
    assert not floor_check({"sensitivity": 1.0}, "sensitivity", 0.9).passed


def test_a_set_holding_films_the_candidate_trained_on_is_refused(gate, active_model, default_model_dir, tmp_path):
    candidate = register_copy(default_model_dir, tmp_path, "c")
    film = next((Path(gate.evaluation_data_dir) / "PNEUMONIA").iterdir())
    with open(Path(candidate.artifact_path) / "data_files.txt", "a") as listing:
        listing.write(f"train\tPNEUMONIA\ttrain/PNEUMONIA/{film.name}\t{sha256_file(film)}\n")
    with pytest.raises(ValidationError, match="1 of the 12 evaluation films are films the candidate trained"):
        model_version_promote(model_version=candidate)

    unlisted = register_copy(default_model_dir, tmp_path, "u")
    manifest = dict(unlisted.manifest, data={k: v for k, v in unlisted.manifest["data"].items() if k != "file_list"})
    ModelVersion.objects.filter(pk=unlisted.pk).update(manifest=manifest)
    unlisted.refresh_from_db()
    with pytest.raises(ValidationError, match="names no list of the films it trained on"):
        model_version_promote(model_version=unlisted)


@pytest.mark.slow
def test_the_promote_page_lists_each_check_in_words_with_value_interval_and_floor(
    team, gate, active_model, default_model_dir, tmp_path
):
    candidate = register_copy(default_model_dir, tmp_path, "c")
    page = (
        login_client(AdminFactory(team=team))
        .get(reverse("admin:diagnostics_modelversion_promote", args=[candidate.pk]))
        .content.decode()
    )
    candidate.refresh_from_db()
    evaluation = candidate.evaluation
    assert evaluation["ci_method"] == GATE_CI_METHOD
    low, high = evaluation["ci95"]["sensitivity"]
    assert "12 films (6 with pneumonia, 6 normal)" in page
    assert "measured at the <strong>lower end</strong> of the candidate's 95 % interval" in page
    assert (
        f'<th scope="row">Sensitivity: the gate&#x27;s floor</th>\n      <td>{evaluation["sensitivity"]:.3f}</td>\n'
        f"      <td>{low:.3f}–{high:.3f}</td>\n      <td>lower end of the 95 % interval at least 0.000</td>\n"
        "      <td><strong>met</strong></td>"
    ) in page
    for words in ("Evaluation set", "Films new to the candidate", "ROC AUC: the gate&#x27;s floor",
                  "Sensitivity against the active model", "ROC AUC against the active model",
                  '<th scope="row">Specificity</th>', "The gate passes."):  # fmt: skip
        assert words in page, words
    for raw_key in ("roc_auc", "sensitivity_tolerance", "auc_tolerance", ">n<"):
        assert raw_key not in page, raw_key


def test_the_gate_form_refuses_a_folder_smaller_than_the_minimum(team, tmp_path):
    admin = AdminFactory(team=team, is_superuser=True)
    gate = promotion_gate_get()
    url = reverse("admin:diagnostics_promotiongate_change", args=[gate.pk])
    data = {"evaluation_data_dir": str(val_split(tmp_path / "val")), "auc_tolerance": 0.005,
            "sensitivity_tolerance": 0.01}  # fmt: skip
    page = login_client(admin).post(url, data).content.decode()
    assert "has 16 films (8 with pneumonia, 8 normal)" in page and "at least 300 films" in page
    gate.refresh_from_db()
    assert gate.evaluation_data_dir == ""
    form = login_client(admin).get(url).content.decode()
    assert "Tolerance on the ROC AUC (area under the ROC curve) against the active model" in form


@pytest.mark.slow
def test_at_the_default_settings_the_gate_evaluates_300_films_with_patient_level_intervals(
    active_model, default_model_dir, tmp_path
):
    """300 films at the defaults: the set passes its count, both models run on it, and every check has its
    interval. The films are noisy copies of the 16 val films, so they come from 16 patients, and the
    patient-level bootstrap gives intervals as wide as 16 patients allow, not 300 films."""
    root = tmp_path / "gate-300"
    films = {"NORMAL": sorted(FULL_SIZE.glob("NORMAL2-*.jpeg")), "PNEUMONIA": sorted(FULL_SIZE.glob("person*.jpeg"))}
    rng = np.random.default_rng(0)
    for label, sources in films.items():
        (root / label).mkdir(parents=True)
        for index in range(150):
            source = sources[index % len(sources)]
            pixels = np.asarray(Image.open(source).convert("L").resize((256, 256)), dtype=np.float64)
            noisy = np.clip(pixels + rng.normal(0, 2, pixels.shape), 0, 255).astype(np.uint8)
            patient = source.stem.rsplit("-", 1)[0] if label == "NORMAL" else source.stem.rsplit("_", 1)[0]
            name = f"{patient}-{index:04d}" if label == "NORMAL" else f"{patient}_{index}"
            (root / label / f"{name}.png").write_bytes(encode(noisy, "PNG"))
    point_gate_at(root)
    from diagnostics.services.model_registry import model_version_gate_check

    result = model_version_gate_check(model_version=register_copy(default_model_dir, tmp_path, "c"))
    assert result.evaluation_set.films == 300 and result.candidate["n"] == result.active["n"] == 300
    assert result.candidate["ci_method"] == GATE_CI_METHOD
    assert [check.name for check in result.checks] == [
        "Evaluation set", "Films new to the candidate", "Sensitivity: the gate's floor", "ROC AUC: the gate's floor",
        "Sensitivity against the active model", "ROC AUC against the active model",
    ]  # fmt: skip
    assert result.checks[0].passed and result.checks[1].passed
    for check in result.checks[2:4]:
        assert check.interval is not None and check.interval[0] <= check.value <= check.interval[1]
        assert check.passed == (check.interval[0] >= (0.90 if "Sensitivity" in check.name else 0.92))
    assert result.passed == all(check.passed for check in result.checks)
    json.dumps(result.audit_detail())  # what the audit log stores is JSON
