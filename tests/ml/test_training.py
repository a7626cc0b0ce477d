"""A tiny real training run (cnn, 32 px, 1 epoch), its artifact, export, parity and evaluation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ml.serving import artifacts, films
from ml.serving.inference import ModelArtifactError, Predictor
from ml.serving.preprocessing import PREPROCESSING_VERSION, load_for_model
from ml.training.config import StageConfig, TrainConfig

from ..images import FILMS_DIR
from .conftest import QUICK

pytestmark = pytest.mark.slow  # real TensorFlow training and ONNX export


def test_artifact_has_model_files_and_a_complete_manifest(artifact: Path) -> None:
    manifest = artifacts.read_manifest(artifact)
    for key in (
        "name",
        "version",
        "architecture",
        "input_size",
        "preprocessing_version",
        "class_names",
        "threshold",
        "metrics",
        "data",
        "config",
        "code_version",
        "training_seconds",
        "created_at",
        "intended_use",
        "files",
        "onnx_sha256",
    ):
        assert key in manifest, key
    assert manifest["architecture"] == "cnn" and manifest["input_size"] == 32
    assert manifest["preprocessing_version"] == PREPROCESSING_VERSION
    assert manifest["class_names"] == ["NORMAL", "PNEUMONIA"]
    assert 0.0 <= manifest["threshold"] <= 1.0
    assert manifest["onnx_sha256"] == artifacts.sha256_file(artifact / "model.onnx")
    assert manifest["metrics"]["onnx_keras_max_abs_diff"] <= 1e-4
    assert manifest["data"]["class_weighting"]["method"] == "balanced"
    listed = (artifact / manifest["data"]["file_list"]).read_text()
    assert artifacts.sha256_text(listed) == manifest["data"]["file_list_sha256"]
    assert len(listed.splitlines()) == 42
    for name in ("model.keras", "model.onnx", "roc.png", "calibration.png"):
        assert (artifact / name).stat().st_size > 0, name
    val = manifest["metrics"]["validation"]
    assert set(val["confusion_matrix"]) == {"tp", "fp", "tn", "fn"}
    assert sum(val["confusion_matrix"].values()) == val["n"]
    assert val["ci95"]["roc_auc"][0] <= val["roc_auc"] <= val["ci95"]["roc_auc"][1]


def test_validation_has_no_training_patient(artifact: Path) -> None:
    rows = [line.split("\t") for line in (artifact / "data_files.txt").read_text().splitlines()]
    side = {"train": set(), "validation": set()}
    for split, _, relpath, _ in rows:
        side[split].add(films.patient_id(Path(relpath).name))
    assert side["validation"] and side["train"].isdisjoint(side["validation"])


def test_onnx_agrees_with_keras_on_validation_images(artifact: Path, dataset_root: Path) -> None:
    import keras

    model = keras.models.load_model(artifact / "model.keras")
    predictor = Predictor.from_artifact(artifact)
    rows = [line.split("\t") for line in (artifact / "data_files.txt").read_text().splitlines()]
    val = [dataset_root / relpath for split, _, relpath, _ in rows if split == "validation"]
    images = np.stack([load_for_model(p.read_bytes(), input_size=32) for p in val])
    keras_prob = model.predict(images, verbose=0).reshape(-1)
    onnx_prob = predictor.predict_batch(images)
    assert onnx_prob.shape == (len(val),)
    assert np.max(np.abs(keras_prob - onnx_prob)) <= 1e-4
    assert float(np.std(onnx_prob)) > 0  # a real model, not a constant


def test_predictor_bytes_path_matches_batch_path(artifact: Path, dataset_root: Path, tmp_path: Path) -> None:
    # The tiny artifact's own gate was fitted on the synthetic films, which real films do not resemble:
    # give a copy the bundled model's gate (it depends on the films only), so that real films pass it.
    copy = tmp_path / "artifact"
    shutil.copytree(artifact, copy)
    bundled = Path(__file__).resolve().parents[2] / "ml" / "default_model"
    shutil.copy2(bundled / "gate.onnx", copy / "gate.onnx")
    manifest = artifacts.read_manifest(copy)
    manifest["gate"] = artifacts.read_manifest(bundled)["gate"]
    artifacts.write_manifest(copy, manifest)
    predictor = Predictor.from_artifact(copy, intra_op_threads=1)
    for path in sorted(FILMS_DIR.glob("*.jpeg")):
        raw = path.read_bytes()
        batch = predictor.predict_batch(load_for_model(raw, input_size=32)[None])[0]
        assert predictor.predict_bytes(raw) == pytest.approx(batch, abs=1e-7)
    # A film the gate refuses gets the refusal, never a number.
    tiny = next((dataset_root / "train" / "NORMAL").iterdir())  # 64 px
    refused = predictor.predict_bytes(tiny.read_bytes())
    assert not isinstance(refused, float) and refused.code == "resolution"
    assert predictor.label_for(predictor.threshold) == "PNEUMONIA"
    assert predictor.label_for(predictor.threshold - 1e-6) == "NORMAL"
    assert predictor.model_sha256 == predictor.manifest["onnx_sha256"]


def test_predictor_refuses_tampered_or_skewed_artifacts(artifact: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelArtifactError, match="Model artifact not found: .*manifest.json"):
        Predictor.from_artifact(tmp_path / "nothing")

    tampered = tmp_path / "tampered"
    shutil.copytree(artifact, tampered)
    with open(tampered / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelArtifactError, match="does not match its manifest"):
        Predictor.from_artifact(tampered)

    skewed = tmp_path / "skewed"
    shutil.copytree(artifact, skewed)
    manifest = json.loads((skewed / "manifest.json").read_text())
    manifest["preprocessing_version"] = "something-else-v0"
    (skewed / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelArtifactError, match="preprocessing"):
        Predictor.from_artifact(skewed)
    # Earlier versions read 224 px films (the training films) exactly as today's: such models still load.
    manifest["preprocessing_version"] = "gray-squash-224-v2"
    (skewed / "manifest.json").write_text(json.dumps(manifest))
    Predictor.from_artifact(skewed)

    missing = tmp_path / "missing"
    shutil.copytree(artifact, missing)
    (missing / "model.onnx").unlink()
    with pytest.raises(ModelArtifactError, match="Model artifact not found: .*model.onnx"):
        Predictor.from_artifact(missing)


def test_evaluate_command_prints_a_json_summary(
    artifact: Path, dataset_root: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from ml.cli import main

    code = main(
        [
            "evaluate",
            "--artifact",
            str(artifact),
            "--data-dir",
            str(dataset_root),
            "--split",
            "val",
            "--bootstrap",
            "20",
            "--plots-dir",
            str(tmp_path),
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n"] == 8 and summary["n_positive"] == 4
    for key in ("accuracy", "sensitivity", "specificity", "roc_auc", "pr_auc", "ece"):
        assert 0.0 <= summary[key] <= 1.0, key
    for key in ("precision", "f1"):  # undefined (null) when the model calls no film positive
        assert summary[key] is None or 0.0 <= summary[key] <= 1.0, key
    cm = summary["confusion_matrix"]
    assert summary["sensitivity"] == pytest.approx(cm["tp"] / (cm["tp"] + cm["fn"]))
    assert summary["threshold"] == artifacts.read_manifest(artifact)["threshold"]
    assert (tmp_path / "roc.png").is_file() and (tmp_path / "calibration.png").is_file()


def test_export_command_packages_a_loadable_artifact_with_model_card(
    artifact: Path, dataset_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ml.cli import main

    summary = tmp_path / "val.json"
    evaluate = ["evaluate", "--artifact", str(artifact), "--data-dir", str(dataset_root), "--split", "val"]
    assert main([*evaluate, "--bootstrap", "20", "--output", str(summary)]) == 0
    capsys.readouterr()
    target = tmp_path / "default_model"
    export = ["export", "--artifact", str(artifact), "--to", str(target), "--no-keras"]
    assert main([*export, "--selection-note", "chosen in a test", "--evaluation", f"held-out val={summary}"]) == 0
    predictor = Predictor.from_artifact(target)
    assert predictor.manifest["files"]["keras"] is None
    assert predictor.manifest["metrics"]["other_evaluations"]["held-out val"]["n"] == 8
    card = (target / "MODEL_CARD.md").read_text()
    assert "Intended use" in card and "chosen in a test" in card and predictor.model_sha256 in card
    assert "Other evaluation: held-out val" in card
    assert f"(fit time) on {predictor.manifest['trained_on']['device']} (" in card  # where it trained, as recorded


def test_a_cancelled_run_stops_and_leaves_no_artifact(dataset_root: Path, tmp_path: Path) -> None:
    from ml.training import training

    events: list[dict] = []

    def hook(event: dict) -> None:
        events.append(event)
        raise training.TrainingCancelled("stop")

    with pytest.raises(training.TrainingCancelled):
        training.train(QUICK, data_dir=dataset_root, output_root=tmp_path, progress=hook)
    assert events and events[0]["kind"] == "batch" and events[0]["stage"] == "full"
    assert list(tmp_path.iterdir()) == []


def test_extra_films_join_training_only(dataset_root: Path, tmp_path: Path) -> None:
    from ml.training import training
    from tests.ml.conftest import encode_jpeg, synthetic_film

    extra_path = tmp_path / "feedback" / "NORMAL" / "portal-image-1.jpeg"
    extra_path.parent.mkdir(parents=True)
    extra_path.write_bytes(encode_jpeg(synthetic_film(0, 4242)))
    extra = [films.ImageRecord(extra_path, 0, "portal-patient-1")]
    split = training.load_split(QUICK, dataset_root, extra)
    assert extra_path in [r.path for r in split.train]
    assert extra_path not in [r.path for r in split.val]
    assert len(split.x_train) == len(split.train)


def _tiny_backbone(*, include_top: bool, weights: str | None, input_shape: tuple[int, int, int]):
    """A two-conv stand-in for a keras.applications constructor, so the test runs in seconds."""
    import keras

    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="block1_conv")(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="block2_conv")(x)
    model = keras.Model(inputs, x, name="tiny_backbone")
    if weights:
        model.load_weights(weights)
    return model


def test_pretrained_backbone_trains_its_head_on_cached_features_and_exports(
    dataset_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The frozen-backbone path: local weights file, features cached once, full model exported."""
    from ml.training import architectures, training

    spec = architectures.ArchSpec("tiny", _tiny_backbone, "tf", None, partial_unfreeze=("block2_conv",))
    monkeypatch.setitem(architectures.ARCHITECTURES, "tiny", spec)
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    weights_file = weights_dir / architectures.local_weights_name("tiny")
    _tiny_backbone(include_top=False, weights=None, input_shape=(32, 32, 3)).save_weights(weights_file)
    stages = [StageConfig("partial", 1, 1e-4, "sgd"), StageConfig("full", 1, 1e-4, "sgd")]  # the VGG19 recipe
    config = TrainConfig(
        architecture="tiny",
        input_size=32,
        weights="local",
        epochs=2,
        batch_size=8,
        bootstrap_samples=10,
        fine_tune_stages=stages,
    )
    cache = tmp_path / "cache"
    out = training.train(
        config,
        data_dir=dataset_root,
        output_root=tmp_path / "runs",
        weights_dir=weights_dir,
        cache_dir=cache,
        latency_runs=2,
    )
    manifest = artifacts.read_manifest(out)
    stage, partial, full = manifest["history"]
    assert stage["stage"] == "head" and stage["features_cached"] and not stage["augmentation"]
    assert (partial["stage"], partial["optimizer"], full["stage"]) == ("partial", "sgd", "full")
    assert not partial["features_cached"] and partial["augmentation"]
    assert stage["feature_cache_hits"] == 0 and stage["feature_seconds"] > 0
    assert weights_file.name in manifest["weights"]["source"]
    assert len(list(cache.glob("features-tiny-*.npy"))) == 2  # train and validation
    assert manifest["metrics"]["onnx_keras_max_abs_diff"] <= 1e-4
    assert Predictor.from_artifact(out).architecture == "tiny"


def test_a_warm_started_distilled_run_within_a_time_budget(
    dataset_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--init-weights starts from another model's weights (a pretrained run: head first), --soft-labels
    mixes a teacher's scores into the targets, and a spent --max-fit-minutes ends fitting with the best
    weights kept and the remaining stages recorded as skipped."""
    import dataclasses

    from ml.training import architectures, training

    spec = architectures.ArchSpec("tiny", _tiny_backbone, "tf", None, partial_unfreeze=("block2_conv",))
    monkeypatch.setitem(architectures.ARCHITECTURES, "tiny", spec)
    start = architectures.build_model("tiny", input_size=32, weights=None, seed=5, pretrained=True)
    init = tmp_path / "start.weights.h5"
    start.model.save_weights(init)

    records = films.list_images(dataset_root, "train")
    teacher = tmp_path / "teacher.tsv"
    teacher.write_text("".join(f"{r.relpath(dataset_root)}\t0.25\n" for r in records))
    config = dataclasses.replace(
        QUICK, architecture="tiny", init_weights=str(init), soft_labels=str(teacher), distill_alpha=0.4,
        fine_tune_stages=[StageConfig("partial", 3, 1e-4)], max_fit_seconds=0.0,
    )  # fmt: skip
    split = training.load_split(config, dataset_root)
    hard = films.labels_of(split.train)
    np.testing.assert_allclose(split.y_train, 0.6 * hard + 0.4 * 0.25, rtol=1e-6)

    out = training.train(config, data_dir=dataset_root, output_root=tmp_path / "runs", latency_runs=2)
    manifest = artifacts.read_manifest(out)
    head, partial = manifest["history"]
    assert head["stage"] == "head" and head["features_cached"]  # warm start counts as pretrained
    assert head["epochs_run"] == 1 and head["stopped_by_time_budget"]
    assert partial == {"stage": "partial", "skipped": "time budget spent"}
    assert manifest["weights"]["source"].startswith("initialised from start.weights.h5 sha256=")
    assert manifest["trained_on"] == {"backend": "tensorflow", "device": "CPU", "precision": "float32"}

    teacher.write_text("train/NORMAL/nobody.jpeg\t0.5\n")
    with pytest.raises(ValueError, match="no teacher score"):
        training.load_split(config, dataset_root)


def test_a_run_trained_without_tensorflow_is_exported_afterwards(
    dataset_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On another Keras backend (PyTorch on a GPU machine) training writes model.keras and no ONNX;
    `python -m ml export` later writes the ONNX, checks parity, measures latency and clears the flag."""
    from ml.cli import main
    from ml.training import training

    monkeypatch.setattr(training, "exports_onnx_here", lambda: False)
    out = training.train(QUICK, data_dir=dataset_root, output_root=tmp_path, latency_runs=2)
    manifest = artifacts.read_manifest(out)
    assert not (out / artifacts.ONNX_NAME).exists() and manifest["onnx_pending"]
    assert manifest["onnx_sha256"] is None and manifest["metrics"]["latency"] is None
    with pytest.raises(ModelArtifactError):
        Predictor.from_artifact(out)

    assert main(["export", "--artifact", str(out)]) == 0
    manifest = artifacts.read_manifest(out)
    assert "onnx_pending" not in manifest and manifest["metrics"]["onnx_keras_max_abs_diff"] <= 1e-4
    assert manifest["metrics"]["latency"]["p50_ms"] > 0
    Predictor.from_artifact(out)

    assert main(["evaluate", "--keras", "--data-dir", str(dataset_root), "--artifact", str(out), "--split", "val",
                 "--bootstrap", "10", "--output", str(tmp_path / "keras.json")]) == 0  # fmt: skip
    onnx_summary = json.loads(_evaluate_json(dataset_root, out, tmp_path))
    keras_summary = json.loads((tmp_path / "keras.json").read_text())
    assert keras_summary["roc_auc"] == pytest.approx(onnx_summary["roc_auc"], abs=1e-6)


def _evaluate_json(dataset_root: Path, artifact: Path, tmp_path: Path) -> str:
    from ml.cli import main

    main(["evaluate", "--data-dir", str(dataset_root), "--artifact", str(artifact), "--split", "val",
          "--bootstrap", "10", "--output", str(tmp_path / "onnx.json")])  # fmt: skip
    return (tmp_path / "onnx.json").read_text()


def test_cached_features_are_keyed_by_the_warm_start_and_the_pooling_margin(tmp_path: Path) -> None:
    """Two warm starts, or two pooling margins, of one architecture pool different features: neither may be
    served the other's cache."""
    from types import SimpleNamespace

    from ml.serving.films import ImageRecord
    from ml.training.config import TrainConfig
    from ml.training.training import cached_features

    images = np.zeros((2, 4, 4, 3), dtype=np.float32)
    records = [ImageRecord(tmp_path / f"person{i}_virus_1.jpeg", 1, f"person{i}") for i in range(2)]
    first_start, second_start = tmp_path / "a.weights.h5", tmp_path / "b.weights.h5"
    first_start.write_bytes(b"a")
    second_start.write_bytes(b"b")

    def features(value: float, **changes: object) -> np.ndarray:
        config = TrainConfig(architecture="xception_mid", input_size=4, init_weights=str(first_start))
        for name, change in changes.items():
            setattr(config, name, change)
        built = SimpleNamespace(
            weights_source=None,
            model=SimpleNamespace(dtype_policy=SimpleNamespace(name="float32")),
            features=SimpleNamespace(predict=lambda x, **_: np.full((len(x), 3), value, dtype=np.float32)),
        )
        return cached_features(built, images, records, "train", config, tmp_path / "cache", "digest")[0]

    assert features(1.0)[0, 0] == 1.0
    assert features(2.0)[0, 0] == 1.0  # the same run again: a cache hit
    assert features(3.0, pool_margin=1)[0, 0] == 3.0
    assert features(4.0, init_weights=str(second_start))[0, 0] == 4.0
