"""Serving variants (ml/serving/variants.py) and the execution provider choice (ml/serving/runtime.py),
without a GPU."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import pytest

from ml.serving import variants
from ml.serving.artifacts import sha256_file
from ml.serving.inference import ModelArtifactError, Predictor
from ml.serving.runtime import CPU_PROVIDER, CUDA_PROVIDER, choose_providers, describe_device, gpu_name, gpu_visible

BUNDLED_MODEL = Path(__file__).resolve().parents[2] / "ml" / "default_model"

# ---------------------------------------------------------------------------------------------
# The execution provider


@pytest.mark.parametrize(
    ("available", "gpu", "expected"),
    [
        ([CUDA_PROVIDER, CPU_PROVIDER], True, [CUDA_PROVIDER, CPU_PROVIDER]),
        ([CUDA_PROVIDER, CPU_PROVIDER], False, [CPU_PROVIDER]),  # onnxruntime-gpu on a machine without a GPU
        (["AzureExecutionProvider", CPU_PROVIDER], True, [CPU_PROVIDER]),  # a GPU, but the CPU-only wheel
        ([CPU_PROVIDER], False, [CPU_PROVIDER]),
    ],
)
def test_cuda_only_when_onnx_runtime_offers_it_and_a_gpu_is_visible(available, gpu, expected) -> None:
    assert choose_providers(available=available, gpu=gpu) == expected


def _gpus_dir(tmp_path: Path, model: str = "NVIDIA H100 80GB HBM3") -> Path:
    gpu = tmp_path / "gpus" / "0000:00:1e.0"
    gpu.mkdir(parents=True)
    (gpu / "information").write_text(f"Model: \t\t {model}\nIRQ:   42\n")
    return tmp_path / "gpus"


def test_a_gpu_is_visible_when_the_driver_lists_one_and_cuda_visible_devices_does_not_hide_it(tmp_path) -> None:
    gpus = _gpus_dir(tmp_path)
    assert gpu_visible(environ={}, gpus_dir=gpus)
    assert gpu_visible(environ={"CUDA_VISIBLE_DEVICES": "0"}, gpus_dir=gpus)
    for hidden in ("", "-1", "none", "NoDevFiles"):
        assert not gpu_visible(environ={"CUDA_VISIBLE_DEVICES": hidden}, gpus_dir=gpus), hidden
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not gpu_visible(environ={}, gpus_dir=empty)
    assert not gpu_visible(environ={}, gpus_dir=tmp_path / "no-driver")
    assert gpu_name(gpus_dir=gpus) == "NVIDIA H100 80GB HBM3"


def test_the_device_names_the_cpu_for_the_cpu_provider() -> None:
    assert describe_device(CPU_PROVIDER).startswith("CPU: ")
    assert describe_device(CUDA_PROVIDER).startswith("GPU: ")


def test_the_predictor_records_where_it_runs() -> None:
    predictor = Predictor.from_artifact(Path("ml/default_model"), providers=[CPU_PROVIDER])
    runtime = predictor.runtime
    assert runtime.provider == CPU_PROVIDER and runtime.device.startswith("CPU: ")
    assert runtime.variant == "fp32" and runtime.variant_sha256 == predictor.model_sha256


# ---------------------------------------------------------------------------------------------
# Checks and the decision (pure functions)


def test_roc_auc_matches_scikit_learn_with_ties() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + 0.3 * labels, 1)  # rounded: many ties
    assert variants.roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert np.isnan(variants.roc_auc(np.ones(5), np.arange(5)))


def _row(name: str, *, auc: float, max_dp: float, b1: float, b16: float) -> dict:
    return {"variant": name, "auc": auc, "max_abs_probability_difference": max_dp, "p50_ms": {"1": b1, "16": b16}}


def test_the_fastest_variant_that_passes_both_checks_is_chosen() -> None:
    rows = [
        _row("fp32", auc=0.967, max_dp=0.0, b1=18.0, b16=300.0),
        _row("int8", auc=0.9665, max_dp=0.008, b1=8.0, b16=120.0),
        _row("bf16", auc=0.967, max_dp=0.002, b1=12.0, b16=200.0),
    ]
    chosen, why = variants.decide(rows)
    assert chosen == "int8" and "2.25x" in why
    assert all(row["passed"] for row in rows)


def test_a_variant_whose_probabilities_move_is_not_served_even_with_the_same_auc() -> None:
    rows = [
        _row("fp32", auc=0.9671, max_dp=0.0, b1=18.0, b16=300.0),
        _row("int8", auc=0.9671, max_dp=0.28, b1=7.0, b16=110.0),  # what this project's int8 model does
        {"variant": "bf16", "unavailable": "no bf16 path"},
    ]
    assert variants.decide(rows) == ("fp32", "no other variant passed the checks")
    assert rows[1]["passed"] is False and "0.2800" in rows[1]["failed_because"][0]
    assert rows[2]["passed"] is False


def test_auc_outside_the_tolerance_fails_in_either_direction() -> None:
    for auc in (0.9671 - 0.0021, 0.9671 + 0.0021):
        rows = [_row("fp32", auc=0.9671, max_dp=0.0, b1=18, b16=300), _row("int8", auc=auc, max_dp=0.0, b1=5, b16=50)]
        assert variants.decide(rows)[0] == "fp32"
        assert "AUC" in rows[1]["failed_because"][0]


def test_a_passing_variant_must_be_clearly_faster_at_every_batch_size() -> None:
    rows = [
        _row("fp32", auc=0.967, max_dp=0.0, b1=18.0, b16=300.0),
        _row("int8", auc=0.967, max_dp=0.001, b1=9.0, b16=290.0),  # faster at batch 1 only
    ]
    chosen, why = variants.decide(rows)
    assert chosen == "fp32" and "int8 passed the checks but is not 1.1x faster" in why


def test_int8_weights_use_the_full_range_only_with_vnni_or_amx() -> None:
    assert variants.int8_reduce_range({"avx2": True})
    assert not variants.int8_reduce_range({"avx512_vnni": True})
    assert not variants.int8_reduce_range({"avx_vnni": True})
    assert not variants.int8_reduce_range({"amx_int8": True})


def test_bf16_is_the_fast_math_switch_on_arm64_and_unavailable_on_x86() -> None:
    config, why = variants.bf16_session_config(machine="aarch64")
    assert config == {variants.BF16_FASTMATH_KEY: "1"} and why == ""
    config, why = variants.bf16_session_config(machine="x86_64")
    assert config is None
    assert "no bfloat16 path on x86_64" in why and variants.BF16_FASTMATH_KEY in why


def test_the_serving_mode_is_auto_or_fp32(monkeypatch) -> None:
    monkeypatch.delenv(variants.MODE_ENV, raising=False)
    assert variants.serving_mode() == "auto"
    monkeypatch.setenv(variants.MODE_ENV, "FP32")
    assert variants.serving_mode() == "fp32"
    monkeypatch.setenv(variants.MODE_ENV, "int8")
    with pytest.raises(ValueError, match="auto"):
        variants.serving_mode()


# ---------------------------------------------------------------------------------------------
# The whole selection on a tiny trained model


@pytest.fixture(scope="module")
def data_dir(dataset_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixtures' dataset with its val/ films standing in for external/."""
    root = tmp_path_factory.mktemp("with_external")
    (root / "train").symlink_to(dataset_root / "train")
    (root / "external").symlink_to(dataset_root / "val")
    return root


@pytest.fixture(scope="module")
def selected(artifact: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    cache_dir = tmp_path_factory.mktemp("variants")
    entry = variants.select(
        artifact, data_dir=data_dir, cache_dir=cache_dir, threads=1, calibration_count=16, seconds_per_round=0.02
    )
    return entry, cache_dir


@pytest.mark.slow
def test_every_variant_is_measured_against_fp32_and_the_choice_cached(selected, artifact: Path, data_dir) -> None:
    entry, cache_dir = selected
    rows = {row["variant"]: row for row in entry["variants"]}
    assert list(rows) == ["fp32", "int8", "bf16"]
    assert rows["fp32"]["max_abs_probability_difference"] == 0.0 and rows["fp32"]["passed"]
    assert rows["fp32"]["sha256"] == sha256_file(artifact / "model.onnx")
    int8 = rows["int8"]
    assert {"auc", "max_abs_probability_difference", "label_flips", "p50_ms", "passed"} <= set(int8)
    assert set(int8["p50_ms"]) == {"1", "16"} and int8["mb"] < rows["fp32"]["mb"]
    if platform.machine() not in variants.ARM64:
        assert "unavailable" in rows["bf16"]
    assert entry["external"] == {"films": 8, "positives": 4, "folder": str(data_dir / "external")}
    assert entry["identity"]["isa_flags"] == sorted(f for f, on in entry["cpu_flags"].items() if on)
    # Measured once: asking again returns the cached record without measuring.
    again = variants.select(artifact, data_dir=data_dir, cache_dir=cache_dir, threads=1)
    assert again["measured_at"] == entry["measured_at"]
    choice, why = variants.read_choice(artifact, cache_dir=cache_dir)
    assert choice is not None and why == "" and choice.variant == entry["chosen"]
    assert "chosen:" in variants.render(entry)


@pytest.mark.slow
def test_the_variants_command_prints_the_cached_record_with_the_cpu_flags(
    selected, artifact: Path, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ml.cli import main

    entry, cache_dir = selected
    out = tmp_path / "record.json"
    args = ["variants", "--artifact", str(artifact), "--data-dir", str(data_dir), "--cache-dir", str(cache_dir)]
    assert main([*args, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ISA flags:" in printed and f"chosen: {entry['chosen']}" in printed
    assert json.loads(out.read_text())["measured_at"] == entry["measured_at"]  # cached, not measured again


@pytest.mark.slow
def test_a_checked_int8_variant_serves_and_a_changed_file_never_does(selected, artifact: Path) -> None:
    from ml.serving.artifacts import read_manifest

    _, cache_dir = selected
    # The cached record as if int8 had won (what a CPU where it passes stores), put back afterwards.
    record = variants.choice_path(cache_dir, variants.identity(read_manifest(artifact)["onnx_sha256"]))
    saved = record.read_text()
    entry = json.loads(saved)
    entry["chosen"], entry["reason"] = "int8", "test"
    int8_path = Path(next(row["path"] for row in entry["variants"] if row["variant"] == "int8"))
    original = int8_path.read_bytes()
    try:
        record.write_text(json.dumps(entry))
        choice, _ = variants.read_choice(artifact, cache_dir=cache_dir)
        assert choice is not None and choice.variant == "int8" and choice.path == int8_path
        predictor = Predictor.from_artifact(artifact, variant=choice, providers=[CPU_PROVIDER])
        assert predictor.runtime.variant == "int8" and predictor.runtime.variant_sha256 == sha256_file(int8_path)
        assert predictor.model_sha256 == sha256_file(artifact / "model.onnx")  # the model's identity is unchanged
        x = np.random.default_rng(0).uniform(0, 255, (2, predictor.input_size, predictor.input_size, 3))
        assert predictor.predict_batch(x.astype(np.float32)).shape == (2,)

        int8_path.write_bytes(original + b"\0")
        with pytest.raises(ModelArtifactError, match="not the file that was checked"):
            Predictor.from_artifact(artifact, variant=choice, providers=[CPU_PROVIDER])
        again, why = variants.read_choice(artifact, cache_dir=cache_dir)
        assert again is None and "not the one that was checked" in why
    finally:
        int8_path.write_bytes(original)
        record.write_text(saved)


def test_without_a_cached_choice_or_data_nothing_but_fp32_serves(tmp_path: Path) -> None:
    # The bundled model: any exported artifact will do, and this one needs no training run first.
    choice, why = variants.ensure_choice(BUNDLED_MODEL, data_dir=None, cache_dir=tmp_path)
    assert choice is None
    assert "no variant choice measured" in why and "no data folder" in why
    choice, why = variants.ensure_choice(BUNDLED_MODEL, data_dir=tmp_path, cache_dir=tmp_path)  # no external/ there
    assert choice is None and "no data folder" in why
