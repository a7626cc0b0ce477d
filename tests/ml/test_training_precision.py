"""Mixed precision: trained with 16-bit activations where it helps, saved and served as a float32 model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ml.serving import artifacts

from .conftest import QUICK


@pytest.mark.slow  # ml.training.training imports Keras and TensorFlow
def test_auto_precision_is_float32_on_a_cpu_and_names_are_checked() -> None:
    from ml.training import training

    assert training.precision_policy("auto") == "float32"  # these machines train on the CPU
    assert training.precision_policy("mixed_bfloat16") == "mixed_bfloat16"
    with pytest.raises(ValueError, match="Unknown precision"):
        training.precision_policy("float8")


@pytest.mark.slow  # real TensorFlow training and ONNX export
def test_a_mixed_precision_run_exports_a_float32_model(dataset_root: Path, tmp_path: Path) -> None:
    import keras

    from ml.training import training

    artifact = training.train(
        dataclasses.replace(QUICK, precision="mixed_float16"),
        data_dir=dataset_root,
        output_root=tmp_path,
        latency_runs=1,
    )
    manifest = artifacts.read_manifest(artifact)
    assert manifest["trained_on"]["precision"] == "mixed_float16"
    assert manifest["metrics"]["onnx_keras_max_abs_diff"] <= 1e-4
    model = keras.models.load_model(artifact / "model.keras")
    assert model.dtype_policy.name == "float32" and keras.mixed_precision.global_policy().name == "float32"
    assert all(weight.dtype == "float32" for weight in model.weights)
