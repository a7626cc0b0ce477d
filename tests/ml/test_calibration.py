"""Calibration on the external split, folded into the model (ml/training/calibration.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ml.serving import artifacts
from ml.serving.inference import Predictor
from ml.training import calibration, networks


def test_platt_fit_recovers_a_known_miscalibration():
    rng = np.random.default_rng(0)
    true_logit = rng.normal(0, 2, 4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-true_logit))).astype(int)
    overconfident = 1 / (1 + np.exp(-(3 * true_logit - 1)))  # the model says a*z+b with a=3, b=-1
    a, b = calibration.fit_platt(y, overconfident)
    assert a == pytest.approx(1 / 3, abs=0.05) and b == pytest.approx(1 / 3, abs=0.1)
    fixed = calibration.apply_platt(overconfident, a, b)
    from ml.training.evaluation import expected_calibration_error

    assert expected_calibration_error(y, fixed) < expected_calibration_error(y, overconfident) / 2


def _scores(n_patients: int = 150, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Two films a patient; pneumonia scores overlap the normals' a little."""
    rng = np.random.default_rng(seed)
    y = np.repeat(rng.random(n_patients) < 0.6, 2).astype(int)
    prob = 1 / (1 + np.exp(-(rng.normal(0, 1.2, len(y)) + np.where(y == 1, 2.5, -2.5))))
    return y, prob, [f"p{i // 2}" for i in range(len(y))]


def test_threshold_keeps_a_margin_below_the_edge_of_the_target():
    """The highest threshold whose bootstrap lower bound of sensitivity still meets the target: below the
    threshold where the point estimate just meets it, and the next higher candidate's bound misses it."""
    y, prob, groups = _scores()
    positives = np.sort(prob[y == 1])[::-1]
    edge = positives[int(np.ceil(0.95 * len(positives))) - 1]  # point sensitivity just 0.95
    chosen = calibration.threshold_for_sensitivity_bound(y, prob, groups, 0.95, samples=400, seed=1)
    assert chosen < edge
    assert (prob[y == 1] >= chosen).mean() > 0.97

    def lower_bound(threshold: float) -> float:
        counts = calibration.patient_resample_counts(groups, samples=400, seed=1)[:, y == 1]
        rates = counts[:, prob[y == 1] >= threshold].sum(axis=1) / counts.sum(axis=1)
        return float(np.percentile(rates, 2.5))

    assert lower_bound(chosen) >= 0.95
    assert lower_bound(positives[positives > chosen].min()) < 0.95


def test_an_unreachable_target_flags_every_pneumonia():
    y = np.array([1, 1, 1, 1, 0, 0])
    prob = np.array([0.9, 0.8, 0.6, 0.3, 0.5, 0.1])
    assert calibration.threshold_for_sensitivity_bound(y, prob, list("abcdef"), 0.99, samples=50) == 0.3


def test_resampling_draws_whole_patients():
    counts = calibration.patient_resample_counts(["a", "a", "b", "c", "c", "c"], samples=30, seed=0)
    assert counts.shape == (30, 6)
    assert (counts[:, 0] == counts[:, 1]).all() and (counts[:, 3] == counts[:, 5]).all()
    assert (counts.sum(axis=1) > 0).all()


def test_crossfit_expectation_measures_each_film_with_a_threshold_chosen_without_it():
    y, prob, groups = _scores(seed=3)
    expected = calibration.crossfit_operating_point(y, prob, groups, 0.95, repeats=4, samples=200, seed=0)
    for point, (low, high) in (
        (expected.sensitivity, expected.sensitivity_ci95),
        (expected.specificity, expected.specificity_ci95),
        (expected.ece, expected.ece_ci95),
    ):
        assert 0.0 <= low <= point <= high <= 1.0
    assert expected.sensitivity > 0.9 and expected.specificity > 0.5 and expected.repeats == 4
    # Random scores: no threshold rule makes them useful, and the cross-fit does not pretend otherwise.
    noise = np.random.default_rng(5).random(len(y))
    blind = calibration.crossfit_operating_point(y, noise, groups, 0.95, repeats=4, samples=200, seed=0)
    assert blind.specificity < 0.25
    with pytest.raises(ValueError, match="Too few patients"):
        calibration.crossfit_operating_point(y[:4], prob[:4], groups[:4], 0.95, repeats=1, samples=10)


@pytest.mark.slow  # a real training run, calibrated and re-exported
def test_calibrate_artifact_folds_platt_into_the_served_model(artifact: Path, dataset_root: Path, tmp_path: Path):
    copy = tmp_path / "artifact"
    shutil.copytree(artifact, copy)
    data = tmp_path / "data"
    data.mkdir()
    (data / "train").symlink_to(dataset_root / "train")
    (data / "external").symlink_to(dataset_root / "val")  # films the model never trained on
    before = artifacts.read_manifest(copy)

    summary = calibration.calibrate_artifact(copy, data, min_sensitivity=0.75, bootstrap_samples=20)

    manifest = artifacts.read_manifest(copy)
    assert manifest["calibration"]["a"] == summary["platt"]["a"] and "external" in manifest["calibration"]["fitted_on"]
    assert manifest["threshold"] == summary["threshold"]
    assert "lower end of the patient-level bootstrap 95 % interval of sensitivity" in manifest["threshold_rule"]
    point = manifest["operating_point"]
    assert point["threshold"] == manifest["threshold"] and point["target_sensitivity"] == 0.75
    assert {"sensitivity", "sensitivity_ci95", "specificity", "specificity_ci95"} == set(point["expected"])
    low, high = manifest["metrics"]["external"]["ece_crossfit_ci95"]
    assert low <= manifest["metrics"]["external"]["ece_crossfit"] <= high
    assert manifest["onnx_sha256"] != before["onnx_sha256"]
    assert manifest["metrics"]["external"]["sensitivity"] >= 0.75
    assert manifest["metrics"]["uncalibrated"]["threshold"] == before["threshold"]
    assert {"roc_auc", "ece", "ci95"} <= set(manifest["metrics"]["validation"])
    Predictor.from_artifact(copy)  # still verifies and loads (gate included)
    with pytest.raises(ValueError, match="calibrated already"):
        calibration.calibrate_artifact(copy, data)


@pytest.mark.slow  # builds a Keras model: imports Keras and TensorFlow
def test_unfolding_platt_gives_back_the_trained_layer() -> None:
    """A warm start from a calibrated model (scripts/device/default_start.py) takes the folded scaling out."""
    import keras

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name=networks.FINAL_LAYER)(inputs))
    trained = [w.copy() for w in model.get_layer(networks.FINAL_LAYER).get_weights()]
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    before = model.predict(x, verbose=0).ravel()
    networks.fold_platt(model, 0.7, -2.0)
    np.testing.assert_allclose(
        model.predict(x, verbose=0).ravel(), calibration.apply_platt(before, 0.7, -2.0), atol=1e-5
    )
    networks.unfold_platt(model, 0.7, -2.0)
    for restored, original in zip(model.get_layer(networks.FINAL_LAYER).get_weights(), trained, strict=True):
        np.testing.assert_allclose(restored, original, atol=1e-6)


@pytest.mark.slow  # builds, saves and runs a Keras model: imports Keras and TensorFlow
def test_teacher_scores_leave_out_the_calibration_fitted_on_external(dataset_root: Path, tmp_path: Path) -> None:
    """Distillation targets come from the teacher's own network: Platt scaling fitted on external/ is
    taken back out, so nothing learnt there reaches a training target."""
    import keras

    from ml.cli import main
    from ml.serving import films
    from ml.training.evaluation import keras_probabilities

    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    final = keras.layers.Dense(1, activation="sigmoid", name=networks.FINAL_LAYER)(pooled)
    model = keras.Model(inputs, final)
    model.get_layer(networks.FINAL_LAYER).set_weights([np.full((3, 1), 0.005, "float32"), np.array([-1.0], "float32")])
    records = films.list_images(dataset_root, "train")
    images = films.load_images(records, input_size=32)
    trained = model.predict(images, verbose=0).ravel()

    teacher = tmp_path / "teacher"
    teacher.mkdir()
    networks.fold_platt(model, 0.5, -1.5)
    model.save(teacher / artifacts.KERAS_NAME)
    manifest = {key: "x" for key in artifacts.REQUIRED_KEYS} | {"input_size": 32, "calibration": {"a": 0.5, "b": -1.5}}
    artifacts.write_manifest(teacher, manifest)
    served = keras_probabilities(teacher, images)
    np.testing.assert_allclose(served, calibration.apply_platt(trained, 0.5, -1.5), atol=1e-5)
    assert np.abs(served - trained).max() > 0.05  # the scaling matters for these films

    out = tmp_path / "scores.tsv"
    assert (
        main(["teacher-scores", "--data-dir", str(dataset_root), "--artifact", str(teacher), "--output", str(out)]) == 0
    )
    written = dict(line.split("\t") for line in out.read_text().splitlines())
    assert set(written) == {r.relpath(dataset_root) for r in records}
    np.testing.assert_allclose([float(written[r.relpath(dataset_root)]) for r in records], trained, atol=1e-5)
