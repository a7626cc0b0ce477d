"""The bacterial-or-viral head (ml/training/subtype.py): attached to an ONNX graph as a third output without
touching the other two, re-attached without duplicating, found by the class activation map's feature map, and
fingerprinted by the backbone alone. A small graph with the bundled model's head layout is built here with
onnx.helper (no TensorFlow); the bundled model's own head is checked at the end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from ml.serving.artifacts import CAM_OUTPUT, SUBTYPE_OUTPUT
from ml.training import subtype
from ml.training.subtype_features import backbone_sha256, feature_map_name, with_feature_outputs

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "ml" / "default_model"
CHANNELS = 4


def _graph(path: Path, *, conv_seed: int = 0, dense_seed: int = 1) -> Path:
    """image (N, 8, 8, 3) -> NCHW -> 3x3 conv (4 channels) -> crop 1 cell each side -> mean -> Dense(1, sigmoid),
    and the Dense as a 1x1 convolution over the cropped map -> ``cam``: the layout tf2onnx gives xception_mid."""
    conv_rng, dense_rng = np.random.default_rng(conv_seed), np.random.default_rng(dense_seed)
    kernel = dense_rng.normal(size=(CHANNELS, 1)).astype(np.float32)
    inits = [
        numpy_helper.from_array(conv_rng.normal(size=(CHANNELS, 3, 3, 3)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(np.array([1, 1], dtype=np.int64), "starts"),
        numpy_helper.from_array(np.array([7, 7], dtype=np.int64), "ends"),
        numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes"),
        numpy_helper.from_array(kernel, "dense_w"),
        numpy_helper.from_array(np.array([0.1], dtype=np.float32), "dense_b"),
        numpy_helper.from_array(kernel.reshape(1, CHANNELS, 1, 1), "cam_w"),
        numpy_helper.from_array(np.array([0.1], dtype=np.float32), "cam_b"),
        numpy_helper.from_array(np.array([-1, 6, 6], dtype=np.int64), "cam_shape"),
    ]
    nodes = [
        helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "conv_w"], ["features"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["features"], ["relu"]),
        helper.make_node("Slice", ["relu", "starts", "ends", "axes"], ["cropped"]),
        helper.make_node("GlobalAveragePool", ["cropped"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "dense_w"], ["logit0"]),
        helper.make_node("Add", ["logit0", "dense_b"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["probability"]),
        helper.make_node("Conv", ["cropped", "cam_w", "cam_b"], ["cam_logits"]),
        helper.make_node("Reshape", ["cam_logits", "cam_shape"], [CAM_OUTPUT]),
    ]
    graph = helper.make_graph(
        nodes,
        "small",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 8, 8, 3])],
        [
            helper.make_tensor_value_info("probability", TensorProto.FLOAT, [None, 1]),
            helper.make_tensor_value_info(CAM_OUTPUT, TensorProto.FLOAT, [None, 6, 6]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _run(path: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, {"image": images}), strict=True))


def _features(path: Path, images: np.ndarray) -> np.ndarray:
    model = onnx.load(str(path))
    with_outputs = with_feature_outputs(model, feature_map_name(model))
    session = ort.InferenceSession(with_outputs.SerializeToString(), providers=["CPUExecutionProvider"])
    mean, peak = session.run(["subtype_feature_mean", "subtype_feature_max"], {"image": images})
    return np.concatenate([mean, peak], axis=1)


IMAGES = np.random.default_rng(5).uniform(0, 1, (5, 8, 8, 3)).astype(np.float32)


def test_the_head_is_a_third_output_and_leaves_the_other_two_as_they_were(tmp_path):
    path = _graph(tmp_path / "model.onnx")
    before = _run(path, IMAGES)
    weights = np.random.default_rng(2).normal(size=2 * CHANNELS)
    subtype.attach_to_onnx(path, weights, -0.3)
    after = _run(path, IMAGES)
    assert list(after) == ["probability", CAM_OUTPUT, SUBTYPE_OUTPUT]
    np.testing.assert_array_equal(after["probability"], before["probability"])
    np.testing.assert_array_equal(after[CAM_OUTPUT], before[CAM_OUTPUT])
    expected = subtype.sigmoid(_features(tmp_path / "model.onnx", IMAGES) @ weights - 0.3)
    np.testing.assert_allclose(after[SUBTYPE_OUTPUT].reshape(-1), expected, atol=1e-5)
    assert after[SUBTYPE_OUTPUT].shape == (5, 1)


def test_attaching_again_replaces_the_head(tmp_path):
    path = _graph(tmp_path / "model.onnx")
    subtype.attach_to_onnx(path, np.ones(2 * CHANNELS), 0.0)
    subtype.attach_to_onnx(path, -np.ones(2 * CHANNELS), 0.5)
    model = onnx.load(str(path))
    assert [o.name for o in model.graph.output].count(SUBTYPE_OUTPUT) == 1
    assert sum(node.name.startswith(subtype.NODE_PREFIX) for node in model.graph.node) == 8
    expected = subtype.sigmoid(-_features(path, IMAGES).sum(axis=1) + 0.5)
    np.testing.assert_allclose(_run(path, IMAGES)[SUBTYPE_OUTPUT].reshape(-1), expected, atol=1e-5)


def test_the_fingerprint_is_the_backbone_s_not_the_heads_nor_the_names(tmp_path):
    first = onnx.load(str(_graph(tmp_path / "a.onnx", dense_seed=1)))
    other_head = onnx.load(str(_graph(tmp_path / "b.onnx", dense_seed=9)))
    other_backbone = onnx.load(str(_graph(tmp_path / "c.onnx", conv_seed=3)))
    sha = backbone_sha256(first, feature_map_name(first))
    assert feature_map_name(first) == "cropped"
    assert backbone_sha256(other_head, "cropped") == sha
    assert backbone_sha256(other_backbone, "cropped") != sha
    for node in other_head.graph.node:  # a re-export renames everything
        node.name = f"renamed/{node.name}"
    assert backbone_sha256(other_head, "cropped") == sha
    attached = subtype.attach_to_onnx(tmp_path / "a.onnx", np.zeros(2 * CHANNELS), 0.0)
    assert attached == sha


def test_a_graph_without_a_class_activation_map_is_refused(tmp_path):
    model = onnx.load(str(_graph(tmp_path / "model.onnx")))
    del model.graph.output[1]
    model.graph.node[-1].output[0] = "not_the_map"
    with pytest.raises(ValueError, match="no class activation map"):
        feature_map_name(model)


def test_labels_come_from_the_file_names():
    assert subtype.viral_label(Path("person1_virus_6.jpeg")) == 1
    assert subtype.viral_label(Path("person1000_bacteria_2931.jpeg")) == 0
    with pytest.raises(ValueError, match="bacteria or virus"):
        subtype.viral_label(Path("IM-0001-0001.jpeg"))


def test_crossfitted_expectation_is_near_what_a_separable_sample_gives():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 100)
    logits = np.where(y == 1, 1.5, -1.5) + rng.normal(size=200)
    groups = [f"p{i // 2}" for i in range(200)]  # two films a patient
    expected = subtype.crossfit_expectation(y, logits, groups, repeats=4, samples=200, seed=0)
    # Two unit-variance normals 3 apart: about 93 % accuracy at the midpoint.
    assert 0.85 < expected["accuracy"] < 0.97
    low, high = expected["accuracy_ci95"]
    assert low < expected["accuracy"] < high
    assert 0.0 <= expected["ece"] < 0.15


def test_the_bundled_model_has_a_subtype_head_the_predictor_runs_in_the_same_call():
    from ml.serving.inference import Predictor
    from ml.serving.preprocessing import load_for_model

    manifest = json.loads((DEFAULT_MODEL / "manifest.json").read_text())
    if not manifest.get("subtype"):
        pytest.fail("ml/default_model ships without its subtype head")
    entry = manifest["subtype"]
    assert entry["onnx_output"] == SUBTYPE_OUTPUT and entry["labels"] == ["bacterial", "viral"]
    assert 0.0 < entry["threshold"] < 1.0
    for split in ("validation", "external"):
        assert entry["metrics"][split]["ci95"]["roc_auc"][0] <= entry["metrics"][split]["roc_auc"]
    predictor = Predictor.from_artifact(DEFAULT_MODEL)
    assert predictor.has_subtype and predictor.subtype_threshold == entry["threshold"]
    films = Path(__file__).resolve().parents[1] / "fixtures" / "films"
    images = np.stack([load_for_model(p.read_bytes(), input_size=224) for p in sorted(films.glob("*.jpeg"))[:2]])
    result = predictor.predict_with_cam(images)
    assert result.subtypes is not None and result.subtypes.shape == (len(images),)
    assert ((result.subtypes > 0) & (result.subtypes < 1)).all()
    np.testing.assert_allclose(result.probabilities, predictor.predict_batch(images), atol=1e-6)
    assert predictor.subtype_label_for(entry["threshold"]) == "viral"


def _artifact(tmp_path: Path, *, conv_seed: int = 0) -> Path:
    """A minimal artifact directory around the small graph: what reattach reads."""
    folder = tmp_path / "artifact"
    folder.mkdir(exist_ok=True)
    _graph(folder / "model.onnx", conv_seed=conv_seed)
    manifest = {
        "name": "small", "version": "1", "architecture": "small", "input_size": 8, "preprocessing_version": "x",
        "class_names": ["NORMAL", "PNEUMONIA"], "threshold": 0.5, "metrics": {}, "files": {"onnx": "model.onnx"},
        "onnx_sha256": "",
    }  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_a_re_exported_graph_gets_the_saved_head_back_and_another_backbone_is_refused(tmp_path):
    from ml.serving.artifacts import read_manifest, sha256_file

    folder = _artifact(tmp_path)
    weights = np.linspace(-1, 1, 2 * CHANNELS)
    sha = subtype.attach_to_onnx(folder / "model.onnx", weights, 0.2)
    np.savez(folder / subtype.HEAD_FILE, weights=weights.astype(np.float32), bias=np.float32(0.2))
    manifest = read_manifest(folder) | {"subtype": {"onnx_output": SUBTYPE_OUTPUT, "backbone_sha256": sha}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    expected = _run(folder / "model.onnx", IMAGES)[SUBTYPE_OUTPUT]

    _graph(folder / "model.onnx")  # re-exported from model.keras: the main head and map only
    assert SUBTYPE_OUTPUT not in _run(folder / "model.onnx", IMAGES)
    assert subtype.reattach(folder)
    np.testing.assert_allclose(_run(folder / "model.onnx", IMAGES)[SUBTYPE_OUTPUT], expected, atol=1e-6)
    assert read_manifest(folder)["onnx_sha256"] == sha256_file(folder / "model.onnx")

    _graph(folder / "model.onnx", conv_seed=7)  # a backbone the head was not fitted on
    other = (folder / "model.onnx").read_bytes()
    with pytest.raises(ValueError, match="not the one the subtype head was fitted on"):
        subtype.reattach(folder)
    assert (folder / "model.onnx").read_bytes() == other  # left as it was


def test_an_artifact_without_a_subtype_head_is_left_alone(tmp_path):
    folder = _artifact(tmp_path)
    before = (folder / "model.onnx").read_bytes()
    assert subtype.reattach(folder) is False
    assert (folder / "model.onnx").read_bytes() == before
