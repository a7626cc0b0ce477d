"""A training run killed mid-way goes on from its last finished epoch when the same command runs again."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from ml.serving import artifacts
from ml.training.progress import TrainingCancelled

from .conftest import QUICK

pytestmark = pytest.mark.slow  # real TensorFlow training

CONFIG = dataclasses.replace(QUICK, epochs=3, early_stopping_patience=10)


def test_a_stopped_run_resumes_at_its_last_finished_epoch(dataset_root: Path, tmp_path: Path) -> None:
    from ml.training import training

    resume_dir, output = tmp_path / "resume", tmp_path / "runs"
    seen: list[tuple[str, int]] = []

    def stop_after_two(event: dict) -> None:
        if event["kind"] == "epoch":
            seen.append((event["stage"], event["epoch"]))
            if event["epochs_done"] == 2:
                raise TrainingCancelled("the machine went away")  # before epoch 2's checkpoint: it is lost

    with pytest.raises(TrainingCancelled):
        training.train(
            CONFIG, data_dir=dataset_root, output_root=output, resume_dir=resume_dir, progress=stop_after_two
        )
    assert seen == [("full", 1), ("full", 2)]
    state = json.loads((resume_dir / "run.json").read_text())
    assert state["stages"] == {} and (resume_dir / "full.backup").is_dir()
    assert not list(output.glob("*/manifest.json"))  # no half artifact

    seen.clear()

    def record(event: dict) -> None:
        if event["kind"] == "epoch":
            seen.append((event["stage"], event["epoch"]))

    artifact = training.train(
        CONFIG, data_dir=dataset_root, output_root=output, resume_dir=resume_dir, progress=record, latency_runs=1
    )
    assert seen == [("full", 2), ("full", 3)]  # epoch 1 was not trained again
    manifest = artifacts.read_manifest(artifact)
    stage = manifest["history"][0]
    # The stage's record counts the epoch trained before the restart too.
    assert stage["epochs_run"] == 3 and stage["epochs_before_restart"] == 1
    assert len(stage["val_auc_by_epoch"]) == 3 and 1 <= stage["best_epoch"] <= 3
    assert json.loads((resume_dir / "run.json").read_text())["artifact"] == str(artifact)
    assert [p.name for p in resume_dir.iterdir()] == ["run.json"]  # the weights went into the artifact

    with pytest.raises(training.ResumeError, match="already finished"):
        training.train(CONFIG, data_dir=dataset_root, output_root=output, resume_dir=resume_dir, latency_runs=1)


def test_a_resume_with_other_settings_is_refused(dataset_root: Path, tmp_path: Path) -> None:
    from ml.training import training

    resume_dir = tmp_path / "resume"
    training.RunCheckpoints.open(resume_dir, config=CONFIG, list_digest="abc")
    with pytest.raises(training.ResumeError, match="epochs"):
        training.RunCheckpoints.open(resume_dir, config=dataclasses.replace(CONFIG, epochs=5), list_digest="abc")
    with pytest.raises(training.ResumeError, match="training/validation files"):
        training.RunCheckpoints.open(resume_dir, config=CONFIG, list_digest="other")
    # The time budget is how long this session may fit: it may change.
    training.RunCheckpoints.open(resume_dir, config=dataclasses.replace(CONFIG, max_fit_seconds=60), list_digest="abc")
