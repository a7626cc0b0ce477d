"""The class activation map as a second output of the exported ONNX graph (ml/training/export.py), and its picture
(ml/serving/heatmap.py). Small Keras models built here; the bundled model's map is checked in
tests/test_pages_heatmap.py."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ml.serving.artifacts import CAM_OUTPUT
from ml.serving.heatmap import (
    cam_matches_probability,
    evidence_over_film,
    evidence_placement,
    heatmap_png,
    positive_evidence,
)
from ml.serving.inference import ModelArtifactError, Predictor
from ml.serving.preprocessing import load_for_model
from ml.training import export

pytestmark = pytest.mark.slow  # builds and exports Keras models (TensorFlow, tf2onnx)

SIZE = 32


def _model(head: str, *, seed: int = 0):  # noqa: ANN202
    """A small convolutional model with the head of one of ml.training.architectures' families:
    "gap" (pooling -> Dropout -> Dense(1): xception_mid), "hidden" (pooling -> Dense(8) -> Dense(1): cnn, vgg16),
    "flatten" (Flatten -> Dense(1): vgg19)."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0, name="normalize")(inputs)
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="conv0")(x)
    x = keras.layers.Conv2D(5, 3, padding="same", name="conv1")(x)
    if head == "flatten":
        x = keras.layers.Flatten(name="flatten")(x)
    else:
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if head == "hidden":
        x = keras.layers.Dense(8, activation="relu", name="head_dense0")(x)
    x = keras.layers.Dropout(0.2, name="head_dropout")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="pneumonia", bias_initializer="ones")(x)
    return keras.Model(inputs, outputs)


def _images(n: int = 6) -> np.ndarray:
    return np.random.default_rng(1).uniform(0, 255, (n, SIZE, SIZE, 3)).astype(np.float32)


def test_a_pooling_head_exports_its_class_activation_map_beside_the_unchanged_probability(tmp_path: Path) -> None:
    import keras

    model = _model("gap")
    images = _images()
    exported = export.export_verified(model, tmp_path / "model.onnx", images)
    assert exported.parity <= export.PARITY_ATOL
    assert exported.heatmap is not None and exported.heatmap["onnx_output"] == CAM_OUTPUT
    assert exported.heatmap["shape"] == [16, 16] and exported.heatmap["onnx_keras_max_abs_diff"] <= 1e-4

    session = export.onnx_session(exported.path)
    assert [o.name for o in session.get_outputs()][1] == CAM_OUTPUT
    probability, cam = session.run(None, {session.get_inputs()[0].name: images})
    assert probability.shape == (6, 1) and cam.shape == (6, 16, 16) and cam.dtype == np.float32
    # Output 0 is the model's probability; the map is the Dense layer at every location of the last feature
    # map, from Keras' own feature map (not the exported graph), and averages to the probability's logit.
    assert np.max(np.abs(probability - model.predict(images, verbose=0))) <= export.PARITY_ATOL
    head = export.cam_head(model)
    assert head is not None
    kernel, bias = model.get_layer("pneumonia").get_weights()
    features = keras.Model(model.inputs, model.get_layer("conv1").output).predict(images, verbose=0)
    assert np.max(np.abs(cam - (features @ kernel[:, 0] + bias[0]))) < 1e-4
    logits = np.log(probability[:, 0] / (1 - probability[:, 0]))
    assert np.max(np.abs(cam.mean(axis=(1, 2)) - logits)) < 1e-4
    assert all(cam_matches_probability(c, float(p)) for c, p in zip(cam, probability[:, 0], strict=True))
    assert not cam_matches_probability(cam[0] + 1.0, float(probability[0, 0]))


def test_a_pooling_margin_maps_only_the_cells_it_pools_and_says_where_they_lie(tmp_path: Path) -> None:
    """Cropping2D before the pooling (ml.training.architectures' pool_margin): the map is the inner cells, still
    averaging to the probability's logit, and its extent is the part of the film those cells stand for."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(5, 3, strides=2, padding="same", activation="relu")(x)  # 16 x 16
    x = keras.layers.Cropping2D(2)(x)  # the inner 12 x 12
    x = keras.layers.Dropout(0.2)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", bias_initializer="ones")(x))
    images = _images()
    exported = export.export_verified(model, tmp_path / "model.onnx", images)
    assert exported.heatmap is not None and exported.heatmap["shape"] == [12, 12]
    assert exported.heatmap["extent"] == [2 / 16, 2 / 16, 14 / 16, 14 / 16]
    probability, cam = export.onnx_session(exported.path).run(None, {"image": images})
    assert all(cam_matches_probability(c, float(p)) for c, p in zip(cam, probability[:, 0], strict=True))
    assert export.cam_head(_model("gap")).extent == (0.0, 0.0, 1.0, 1.0)  # type: ignore[union-attr]


def test_a_map_is_drawn_over_its_extent_and_clear_outside() -> None:
    hot_corner = np.zeros((12, 12), dtype=np.float32)
    hot_corner[0, 0] = 1.0
    whole = evidence_over_film(hot_corner, width=160, height=160)
    inner = evidence_over_film(hot_corner, width=160, height=160, extent=(0.125, 0.125, 0.875, 0.875))
    assert whole[:8, :8].max() > 0.9  # a corner cell stretched over the whole film paints its corner
    assert inner[:20, :].max() == 0 and inner[:, :20].max() == 0 and inner[20:30, 20:30].max() > 0.9
    picture = np.asarray(
        Image.open(io.BytesIO(heatmap_png(hot_corner, width=160, height=160, extent=[0.125] * 2 + [0.875] * 2)))
    )
    assert picture[:20, :, 3].max() == 0 and picture[20:30, 20:30, 3].max() > 150


def test_placement_counts_the_strong_evidence_in_the_outer_frame() -> None:
    values = np.zeros((100, 100), dtype=np.float32)
    values[2:8, 2:8] = 1.0  # 36 px of strong evidence in the frame (outer 10 px)
    values[40:52, 40:49] = 0.8  # 108 px inside it, weaker
    values[60:70, 60:70] = 0.3  # weak: not counted
    placement = evidence_placement(values)
    assert placement.frame_share == pytest.approx(36 / (36 + 108 * 0.8))
    assert not placement.hottest_inside
    values[2:8, 2:8] = 0.9
    values[45, 45] = 1.0
    assert evidence_placement(values).hottest_inside
    assert evidence_placement(np.zeros((10, 10))) == evidence_placement(np.zeros((10, 10)))
    assert not evidence_placement(np.zeros((10, 10))).hottest_inside


@pytest.mark.parametrize("head", ["hidden", "flatten"])
def test_other_heads_export_the_probability_only_and_record_no_heatmap(tmp_path: Path, head: str) -> None:
    model = _model(head)
    assert export.cam_head(model) is None
    exported = export.export_verified(model, tmp_path / "model.onnx", _images(2))
    assert exported.heatmap is None
    assert len(export.onnx_session(exported.path).get_outputs()) == 1


def test_the_head_is_found_by_structure_not_by_layer_names() -> None:
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, name="anything")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="not_called_pool")(x)
    found = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="out")(x))
    assert export.cam_head(found) is not None
    two_units = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    logits_only = keras.Model(inputs, keras.layers.Dense(1)(x))
    kept = keras.layers.GlobalAveragePooling2D(keepdims=True)(keras.layers.Conv2D(4, 3)(inputs))
    keepdims = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(kept)))
    for model in (two_units, logits_only, keepdims):
        assert export.cam_head(model) is None, model


def test_the_map_points_at_the_region_that_raises_the_estimate_and_the_picture_keeps_its_orientation(
    tmp_path: Path,
) -> None:
    """Brightness is this model's evidence for pneumonia: a bright square at the top right of a wide film
    must be warm at the top right of the map and of the picture, and nothing at the bottom left."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0, name="normalize")(inputs)
    conv = keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer=keras.initializers.Constant(1 / 3))
    x = keras.layers.GlobalAveragePooling2D()(conv(x))
    outputs = keras.layers.Dense(
        1,
        activation="sigmoid",
        kernel_initializer=keras.initializers.Constant(8.0),
        bias_initializer=keras.initializers.Constant(-2.0),
    )(x)
    model = keras.Model(inputs, outputs)
    film = np.full((64, 128), 20, dtype=np.uint8)  # wider than high, as the heatmap picture below
    film[4:20, 80:120] = 250  # top right
    buffer = io.BytesIO()
    Image.fromarray(film).save(buffer, format="PNG")
    tensor = load_for_model(buffer.getvalue(), input_size=SIZE)
    exported = export.export_verified(model, tmp_path / "model.onnx", np.stack([tensor, _images(1)[0]]))
    session = export.onnx_session(exported.path)
    _, cam = session.run(None, {session.get_inputs()[0].name: tensor[None]})
    evidence = positive_evidence(cam[0])
    row, col = np.unravel_index(np.argmax(evidence.map), evidence.map.shape)
    assert row < SIZE // 3 and col >= SIZE // 2
    assert evidence.map[2:8, 22:28].mean() > 0.8 > 0.2 > evidence.map[20:, :16].mean()
    picture = np.asarray(Image.open(io.BytesIO(heatmap_png(evidence.map, width=200, height=100))))
    assert picture.shape == (100, 200, 4)
    assert picture[10:25, 130:180, 3].min() > 150 and picture[60:, :80, 3].max() == 0


def test_a_manifest_promising_a_map_the_graph_lacks_is_refused(tmp_path: Path) -> None:
    exported = export.export_verified(_model("flatten"), tmp_path / "model.onnx", _images(2))
    manifest = {
        "name": "flat",
        "version": "1",
        "architecture": "vgg19",
        "input_size": SIZE,
        "threshold": 0.5,
        "preprocessing_version": "gray-squash-v1",
        "class_names": ["NORMAL", "PNEUMONIA"],
        "heatmap": {"onnx_output": CAM_OUTPUT, "shape": [8, 8]},
    }
    session = export.onnx_session(exported.path)
    with pytest.raises(ModelArtifactError, match="promises a heatmap output"):
        Predictor(manifest, session, "0" * 64, chest_check=None)  # type: ignore[arg-type]
    manifest["heatmap"] = None
    predictor = Predictor(manifest, session, "0" * 64, chest_check=None)  # type: ignore[arg-type]
    result = predictor.predict_with_cam(_images(3))
    assert result.cams is None and result.probabilities.shape == (3,)
