"""The comparison report shows every row on validation and on external/ side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ml.training.comparison import run_comparison

pytestmark = pytest.mark.slow  # a real training run per row


def test_the_report_has_the_external_split_beside_validation(dataset_root: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for split, source in (("train", "train"), ("val", "val"), ("external", "val")):
        (data / split).symlink_to(dataset_root / source)
    report = run_comparison(
        budget="quick",
        only=["cnn"],
        data_dir=data,
        weights_dir=None,
        output_root=tmp_path / "runs",
        cache_dir=tmp_path / "cache",
        report_path=tmp_path / "model-comparison.md",
        plots_dir=tmp_path / "plots",
        seed=3,
    )
    text = report.read_text()
    assert "### The same models on `external/`" in text and "### The same models on `val/`" in text
    assert text.index("`external/`") < text.index("`val/`")  # the split models are chosen on comes first
    [row] = json.loads((tmp_path / "plots" / "comparison.json").read_text())
    assert set(row["also"]) == {"external", "val"} and row["also"]["external"]["n"] == 8
