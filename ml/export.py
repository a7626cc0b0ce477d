"""Keras -> ONNX export, parity check and CPU latency measurement."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras
    import onnxruntime as ort

PARITY_ATOL = 1e-4


def export_onnx(model: keras.Model, path: str | Path) -> Path:
    """Export with a dynamic batch axis; the model must have been called once."""
    path = Path(path)
    model.export(str(path), format="onnx", verbose=False)
    return path


def onnx_session(path: str | Path, threads: int | None = None) -> ort.InferenceSession:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def onnx_predict(session: ort.InferenceSession, images: np.ndarray, batch: int = 64) -> np.ndarray:
    name = session.get_inputs()[0].name
    outs = [
        session.run(None, {name: images[i : i + batch].astype(np.float32)})[0] for i in range(0, len(images), batch)
    ]
    return np.concatenate(outs).reshape(-1)


def parity_max_abs_diff(keras_prob: np.ndarray, onnx_path: str | Path, images: np.ndarray) -> float:
    onnx_prob = onnx_predict(onnx_session(onnx_path), images)
    return float(np.max(np.abs(onnx_prob - keras_prob.reshape(-1))))


def export_verified(model: keras.Model, onnx_path: str | Path, images: np.ndarray) -> tuple[Path, float]:
    """Export `model` to ONNX and check it gives Keras' probabilities on `images` (within PARITY_ATOL).

    Keras predicts first: that also "calls" a model whose head alone was fitted, which export needs.
    Returns the ONNX path and the largest difference; RuntimeError when they disagree.
    """
    keras_prob = model.predict(images, verbose=0)
    path = export_onnx(model, onnx_path)
    parity = parity_max_abs_diff(keras_prob, path, images)
    if parity > PARITY_ATOL:
        raise RuntimeError(f"ONNX export disagrees with Keras by {parity:.2e} (> {PARITY_ATOL})")
    return path, parity


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
