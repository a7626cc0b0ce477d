"""The frozen backbone's features of a film, for the subtype head (ml.training.subtype).

The subtype head reads the same margin-cropped last feature map as the main head and its class activation
map: the tensor the ``cam`` output's 1x1 convolution reads (ml/training/export.py). This module finds that
tensor in an artifact's ONNX graph, fingerprints everything upstream of it (``backbone_sha256``: the
operators and the weights' bytes, not the names, so a re-exported graph with a retrained main head but the
same frozen backbone has the same fingerprint) and computes the pooled statistics of that map the head is
fitted on, through the serving path (ml.serving.films.load_images). Features are cached under
``var/subtype_features/<backbone sha256>/`` by film path: computing them over the ~4,000 pneumonia films
is the cost of the whole command on a CPU.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ml.serving.artifacts import CAM_OUTPUT
from ml.serving.films import ImageRecord, load_images

log = logging.getLogger(__name__)

# The statistics of the (N, C, h, w) feature map the head may use, each (N, C): their ONNX outputs' names.
FEATURE_OUTPUTS = ("subtype_feature_mean", "subtype_feature_max")
CACHE_ROOT = Path("var/subtype_features")


def feature_map_name(model: Any) -> str:
    """The name of the margin-cropped last feature map: the input of the convolution that makes ``cam``."""
    producers = {output: node for node in model.graph.node for output in node.output}
    name = CAM_OUTPUT
    for _ in range(8):  # cam <- Reshape <- Conv (the final Dense as a 1x1 convolution) <- the map
        node = producers.get(name)
        if node is None:
            break
        if node.op_type == "Conv":
            return str(node.input[0])
        name = node.input[0]
    raise ValueError(
        f"The model's ONNX graph has no class activation map output '{CAM_OUTPUT}' to find its feature map by: "
        "a subtype head needs an architecture with one (xception_mid)."
    )


def backbone_sha256(model: Any, feature_map: str) -> str:
    """Fingerprint of everything that computes `feature_map`: each upstream operator's type and attributes
    and the bytes of the weights it reads, in graph order (names left out)."""
    from onnx import numpy_helper

    producers = {output: node for node in model.graph.node for output in node.output}
    initializers = {init.name: init for init in model.graph.initializer}
    upstream: set[int] = set()
    stack = [feature_map]
    while stack:
        node = producers.get(stack.pop())
        if node is None or id(node) in upstream:
            continue
        upstream.add(id(node))
        stack.extend(node.input)
    digest = hashlib.sha256()
    for node in model.graph.node:
        if id(node) not in upstream:
            continue
        digest.update(node.op_type.encode())
        for attribute in sorted(node.attribute, key=lambda a: a.name):
            digest.update(attribute.name.encode())
            if attribute.type != attribute.GRAPH:
                digest.update(attribute.SerializeToString(deterministic=True).replace(attribute.name.encode(), b""))
        for name in node.input:
            if name in initializers:
                array = numpy_helper.to_array(initializers[name])
                digest.update(str((array.dtype, array.shape)).encode())
                digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def with_feature_outputs(model: Any, feature_map: str) -> Any:
    """A copy of `model` that also outputs the map's spatial mean and max, (N, C) each (global pooling
    then Flatten: the same operators in every opset)."""
    import onnx
    from onnx import TensorProto, helper

    graph_model = onnx.ModelProto()
    graph_model.CopyFrom(model)
    graph = graph_model.graph
    for pool, name in zip(("GlobalAveragePool", "GlobalMaxPool"), FEATURE_OUTPUTS, strict=True):
        graph.node.append(helper.make_node(pool, [feature_map], [f"{name}_pooled"]))
        graph.node.append(helper.make_node("Flatten", [f"{name}_pooled"], [name], axis=1))
        graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, None]))
    return graph_model


def compute_features(
    onnx_path: str | Path,
    records: Sequence[ImageRecord],
    *,
    input_size: int,
    cache_root: str | Path = CACHE_ROOT,
    threads: int = 2,
    chunk: int = 16,
) -> tuple[np.ndarray, str]:
    """(N, 2C) float32 [mean | max] of the feature map for `records`, and the backbone's fingerprint.
    Films already in the cache for this backbone are not computed again."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(onnx_path))
    feature_map = feature_map_name(model)
    sha = backbone_sha256(model, feature_map)
    cache_dir = Path(cache_root) / sha
    cache_dir.mkdir(parents=True, exist_ok=True)
    cached = _read_cache(cache_dir)
    missing = [r for r in records if str(r.path.resolve()) not in cached]
    if missing:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = False  # the activations of a chunk, not an arena grown for the largest
        session = ort.InferenceSession(
            with_feature_outputs(model, feature_map).SerializeToString(),
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )
        input_name = session.get_inputs()[0].name
        started = time.perf_counter()
        for start in range(0, len(missing), chunk):
            part = missing[start : start + chunk]
            images = load_images(part, input_size=input_size)
            mean, peak = session.run(list(FEATURE_OUTPUTS), {input_name: images})
            rows = np.concatenate([mean, peak], axis=1).astype(np.float32)
            _append_cache(cache_dir, part, rows)
            cached.update({str(r.path.resolve()): row for r, row in zip(part, rows, strict=True)})
            log.info(
                "subtype features: %d/%d films, %.0f s", start + len(part), len(missing), time.perf_counter() - started
            )
    return np.stack([cached[str(r.path.resolve())] for r in records]), sha


def _read_cache(cache_dir: Path) -> dict[str, np.ndarray]:
    rows: dict[str, np.ndarray] = {}
    for part in sorted(cache_dir.glob("part-*.npz")):
        with np.load(part) as stored:
            rows.update(zip(stored["paths"].tolist(), stored["features"], strict=True))
    return rows


def _append_cache(cache_dir: Path, records: Sequence[ImageRecord], rows: np.ndarray) -> None:
    index = len(list(cache_dir.glob("part-*.npz")))
    target = cache_dir / f"part-{index:05d}.npz"
    temporary = target.with_suffix(".tmp.npz")
    np.savez(temporary, paths=np.array([str(r.path.resolve()) for r in records]), features=rows)
    temporary.replace(target)
