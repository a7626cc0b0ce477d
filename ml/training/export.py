"""Keras -> ONNX export, parity check and CPU latency measurement.

Heatmaps ride in the exported graph. A model whose head is global average pooling straight into
Dense(1, sigmoid) (``xception_mid``; found by the layers' structure, Dropout in between allowed) gets
a second ONNX output ``cam`` of shape (N, h, w): its class activation map (Zhou et al., 2016), the
final Dense layer applied at every location of the last feature map, sum_k w_k A_k(y, x) + b. That is
the logit of P(PNEUMONIA) location by location, and its spatial mean is exactly the logit the first
output squashes (the pooling is a mean and the layer is linear; a Platt calibration folded into that
layer, ml/training/calibration.py, is folded into the map too). So the heatmap is computed with the prediction,
by the same ONNX Runtime call, and explains the number shown. Heads with anything else between the
feature map and the output (Flatten, hidden Dense layers: ``cnn``, the VGGs) have no such map: their
graph has the probability only, and the manifest's ``heatmap`` entry is null.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ml.serving.artifacts import CAM_OUTPUT, FULL_EXTENT

if TYPE_CHECKING:
    import keras
    import onnxruntime as ort

PARITY_ATOL = 1e-4
# The map is in logits (tens at most); float32 sums over a few hundred channels agree far closer than this.
CAM_PARITY_ATOL = 1e-3
# Films on which export compares the ONNX map with the one computed from the Keras model's feature map.
CAM_PARITY_IMAGES = 4


@dataclass(frozen=True)
class CamHead:
    """Where a model's class activation map comes from."""

    feature_map: Any  # the KerasTensor the global average pooling reduces, (N, h, w, C)
    kernel: np.ndarray  # (C,) the final Dense(1) layer's weights
    bias: float
    # Where the map lies on the model's input, as fractions (top, left, bottom, right): the whole input,
    # or the part a pooling margin (Cropping2D before the pooling, ml.training.architectures) keeps.
    extent: tuple[float, float, float, float] = FULL_EXTENT


@dataclass(frozen=True)
class Exported:
    path: Path
    parity: float  # largest |P(ONNX) - P(Keras)| on the check images
    heatmap: dict[str, Any] | None  # the manifest's "heatmap" entry; None: the architecture gives no map


def cam_head(model: keras.Model) -> CamHead | None:
    """The model's head if it is GlobalAveragePooling2D -> (Dropout ->) Dense(1, sigmoid), else None.

    Walked backwards from the model's output through the functional graph, so a layer shared with
    another model (ml.training.architectures' ``head``) is read in this model's call of it."""
    import keras

    if len(model.outputs) != 1:
        return None
    dense, dense_input = _produced_by(model.outputs[0])
    if not isinstance(dense, keras.layers.Dense) or dense.units != 1 or dense.get_config()["activation"] != "sigmoid":
        return None
    layer, layer_input = _produced_by(dense_input)
    while isinstance(layer, keras.layers.Dropout | keras.layers.Identity):  # identities at inference
        layer, layer_input = _produced_by(layer_input)
    if not isinstance(layer, keras.layers.GlobalAveragePooling2D):
        return None
    if layer.data_format != "channels_last" or layer.keepdims or len(layer_input.shape) != 4:
        return None
    if None in tuple(layer_input.shape[1:]):  # the map's size must be known to name its shape
        return None
    kernel, *bias = (np.asarray(weights, dtype=np.float32) for weights in dense.get_weights())
    return CamHead(layer_input, kernel[:, 0], float(bias[0][0]) if bias else 0.0, _extent(layer_input))


def _extent(feature_map: Any) -> tuple[float, float, float, float]:
    """The part of the input a (possibly cropped) feature map covers: a Cropping2D that made it keeps
    the cells inside its margins, each cell standing for an equal share of the input."""
    import keras

    layer, layer_input = _produced_by(feature_map)
    if not isinstance(layer, keras.layers.Cropping2D) or layer_input is None:
        return FULL_EXTENT
    (top, bottom), (left, right) = layer.cropping
    height, width = (int(size) for size in layer_input.shape[1:3])
    return (top / height, left / width, (height - bottom) / height, (width - right) / width)


def _produced_by(tensor: Any) -> tuple[Any, Any]:
    """The layer whose call made `tensor` and that call's single input; (None, None) otherwise."""
    history = getattr(tensor, "_keras_history", None)  # (layer, node index, tensor index) in Keras 3
    if history is None:
        return None, None
    layer, node_index, _ = history
    inputs = layer._inbound_nodes[node_index].input_tensors
    return (layer, inputs[0]) if len(inputs) == 1 else (None, None)


def with_cam_output(model: keras.Model, head: CamHead) -> keras.Model:
    """`model` with a second output, the class activation map: the Dense layer as a 1x1 convolution."""
    import keras

    height, width, channels = (int(size) for size in head.feature_map.shape[1:])
    conv = keras.layers.Conv2D(1, 1, name=f"{CAM_OUTPUT}_logits")
    logits = conv(head.feature_map)
    conv.set_weights([head.kernel.reshape(1, 1, channels, 1), np.array([head.bias], dtype=np.float32)])
    cam = keras.layers.Reshape((height, width), name=CAM_OUTPUT)(logits)
    return keras.Model(model.inputs, [model.outputs[0], cam], name=f"{model.name}_with_cam")


def export_onnx(model: keras.Model, path: str | Path) -> Path:
    """Export with a dynamic batch axis, and the ``cam`` output when the head has a class activation
    map (cam_head); the model must have been called once. Output 0 is always P(PNEUMONIA), (N, 1)."""
    path = Path(path)
    head = cam_head(model)
    if head is None:
        model.export(str(path), format="onnx", verbose=False)
        return path
    graph = with_cam_output(model, head)
    graph.predict(np.zeros((1, *model.inputs[0].shape[1:]), dtype=np.float32), verbose=0)  # export needs a call
    graph.export(str(path), format="onnx", verbose=False)
    _rename_output(path, index=1, name=CAM_OUTPUT)
    return path


def _rename_output(path: Path, *, index: int, name: str) -> None:
    """tf2onnx names outputs after TensorFlow's Identity ops; the map gets a name to be found by."""
    import onnx

    model = onnx.load(str(path))
    old = model.graph.output[index].name
    for node in model.graph.node:
        node.output[:] = [name if output == old else output for output in node.output]
        node.input[:] = [name if value == old else value for value in node.input]
    model.graph.output[index].name = name
    onnx.save(model, str(path))


def onnx_session(path: str | Path, threads: int | None = None) -> ort.InferenceSession:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def onnx_outputs(session: ort.InferenceSession, images: np.ndarray, batch: int = 64) -> list[np.ndarray]:
    """Every output of the graph for `images`, in batches: [P(PNEUMONIA) (N, 1), and the map if any]."""
    name = session.get_inputs()[0].name
    runs = [session.run(None, {name: images[i : i + batch].astype(np.float32)}) for i in range(0, len(images), batch)]
    return [np.concatenate(parts) for parts in zip(*runs, strict=True)]


def onnx_predict(session: ort.InferenceSession, images: np.ndarray, batch: int = 64) -> np.ndarray:
    return onnx_outputs(session, images, batch)[0].reshape(-1)


def parity_max_abs_diff(keras_prob: np.ndarray, onnx_path: str | Path, images: np.ndarray) -> float:
    onnx_prob = onnx_predict(onnx_session(onnx_path), images)
    return float(np.max(np.abs(onnx_prob - keras_prob.reshape(-1))))


def keras_cam(model: keras.Model, head: CamHead, images: np.ndarray) -> np.ndarray:
    """The class activation map from the Keras model's own feature map, in float64: the reference."""
    import keras

    features = keras.Model(model.inputs, head.feature_map).predict(images, verbose=0)
    return np.einsum("nhwc,c->nhw", features.astype(np.float64), head.kernel.astype(np.float64)) + head.bias


def export_verified(model: keras.Model, onnx_path: str | Path, images: np.ndarray) -> Exported:
    """Export `model` to ONNX and check it gives Keras' probabilities on `images` (within PARITY_ATOL)
    and, when it has one, Keras' class activation map on the first few (within CAM_PARITY_ATOL).

    Keras predicts first: that also "calls" a model whose head alone was fitted, which export needs.
    RuntimeError when they disagree."""
    keras_prob = model.predict(images, verbose=0)
    path = export_onnx(model, onnx_path)
    outputs = onnx_outputs(onnx_session(path), images)
    parity = float(np.max(np.abs(outputs[0].reshape(-1) - keras_prob.reshape(-1))))
    if parity > PARITY_ATOL:
        raise RuntimeError(f"ONNX export disagrees with Keras by {parity:.2e} (> {PARITY_ATOL})")
    head = cam_head(model)
    if head is None:
        return Exported(path, parity, None)
    checked = images[:CAM_PARITY_IMAGES]
    cam = outputs[1][: len(checked)]
    cam_parity = float(np.max(np.abs(cam - keras_cam(model, head, checked))))
    if cam_parity > CAM_PARITY_ATOL:
        raise RuntimeError(f"The exported class activation map disagrees with Keras by {cam_parity:.2e}")
    return Exported(path, parity, heatmap_entry(shape=cam.shape[1:], parity=cam_parity, extent=head.extent))


def heatmap_entry(
    *, shape: tuple[int, ...], parity: float, extent: tuple[float, float, float, float] = FULL_EXTENT
) -> dict[str, Any]:
    """What the manifest says about the map (ml.serving.inference reads ``onnx_output``; the heatmap is drawn
    over the ``extent`` of the film, top, left, bottom, right as fractions)."""
    return {
        "method": "class activation map",
        "onnx_output": CAM_OUTPUT,
        "shape": [int(size) for size in shape],
        "extent": [float(edge) for edge in extent],
        "values": (
            "logit of P(PNEUMONIA) at each location of the last feature map (the final Dense layer applied "
            "there); their mean is the logit of the served probability"
        ),
        "onnx_keras_max_abs_diff": parity,
    }


def measure_latency(onnx_path: str | Path, input_size: int, *, threads: int = 2, runs: int = 30) -> dict[str, float]:
    """Batch-of-one latency in ms (what a portal upload costs), after warm-up."""
    session = onnx_session(onnx_path, threads)
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).uniform(0, 255, (1, input_size, input_size, 3)).astype(np.float32)
    for _ in range(3):
        session.run(None, {name: x})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {name: x})
        times.append((time.perf_counter() - start) * 1000)
    return {
        "p50_ms": float(np.percentile(times, 50)),
        "p95_ms": float(np.percentile(times, 95)),
        "threads": threads,
        "runs": runs,
        "batch": 1,
    }
