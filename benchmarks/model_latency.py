"""How fast the serving path runs on this CPU, and how close it comes to the CPU's limit.

``python -m benchmarks.model_latency`` measures, in one run:

- the machine: CPU model, cores, the SIMD/matrix flags that matter (AVX2, AVX-512, AMX), load;
- a float32 matrix-multiply ceiling on the same threads (numpy/OpenBLAS and ONNX Runtime MatMul,
  best of several sizes): the most GFLOP/s a dense kernel reaches here;
- for every model (the bundled default, artifacts given or found, and architectures exported with
  random weights to measure speed only): FLOPs per image counted from the ONNX graph (conv and
  dense multiply-adds x 2), ONNX Runtime images/s and latency p50/p95 at batch 1 and 16 with the
  serving session options, achieved GFLOP/s and its ratio to the ceiling, peak RSS; optionally
  TensorFlow (``tf.function``) on the same model and threads, as a ratio to ONNX Runtime;
- JPEG decoding of a full-size film: naive (full decode, resize) against the serving path
  (``ml.serving.preprocessing.load_for_model``, Pillow ``draft``);
- optionally an int8 variant of the default model, with its AUC on the manifest's validation split;
- optionally the serving variants (``ml.serving.variants``: fp32, int8, bf16) of the default model, checked on
  ``<data>/external`` against fp32 and timed in the same run, with the choice a worker makes on this CPU.

Every model is measured in its own fresh process (``python -m benchmarks.model_latency --job``), so its peak RSS
is its own and TensorFlow never shares a process with ONNX Runtime. No Django here.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

RELEVANT_FLAGS = (
    "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni",
    "amx_tile", "amx_bf16", "amx_int8",
)  # fmt: skip
# Exported with random weights when no trained artifact of them is given: speed only.
SPEED_ONLY_ARCHITECTURES = ("vgg16", "vgg19", "resnet50v2", "xception", "mobilenetv2")
DEFAULT_BATCHES = (1, 16)
GEMM_SIZES = (256, 512, 1024, 2048)
QUANTIZATION_AUC_TOLERANCE = 0.005


# ---------------------------------------------------------------------------------------------
# The machine


def machine_info() -> dict[str, Any]:
    """CPU model, cores, the flags that decide which kernels run, load average, memory."""
    cpuinfo = _read("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    flags_line = next((line.split(":", 1)[1] for line in cpuinfo.splitlines() if line.startswith("flags")), "")
    flags = set(flags_line.split())
    meminfo = _read("/proc/meminfo")
    mem_kb = next((int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal:")), 0)
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        affinity = os.cpu_count() or 0
    return {
        "cpu_model": model or platform.processor() or platform.machine(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": affinity,
        "flags": {flag: flag in flags for flag in RELEVANT_FLAGS},
        "load_average": list(os.getloadavg()),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": _version("onnxruntime"),
        "pillow": _version("PIL"),
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _version(module: str) -> str:
    try:
        return str(__import__(module).__version__)
    except ImportError:
        return "not installed"


def ml_processes() -> list[str]:
    """Other `python -m ml` processes (training, comparisons) that would share the cores."""
    mine = {os.getpid(), os.getppid()}
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if int(proc.name) in mine:
                continue
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError):
            continue
        if "-m ml " in cmd + " ":
            found.append(f"{proc.name}: {cmd[:160]}")
    return found


# ---------------------------------------------------------------------------------------------
# Timing


def time_calls(
    call: Callable[[], object], *, warmup: int = 3, min_runs: int = 5, max_runs: int = 200, budget_s: float = 8.0
) -> list[float]:
    """Milliseconds per call, after warm-up: at least min_runs, then until max_runs or the budget."""
    for _ in range(warmup):
        call()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() < deadline):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000.0)
    return times


def latency_summary(times_ms: Sequence[float], *, batch: int = 1) -> dict[str, float]:
    p50 = float(np.percentile(times_ms, 50))
    return {
        "batch": batch,
        "runs": len(times_ms),
        "p50_ms": p50,
        "p95_ms": float(np.percentile(times_ms, 95)),
        "min_ms": float(np.min(times_ms)),
        "images_per_s": batch * 1000.0 / p50 if p50 > 0 else float("nan"),
    }


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB.

    VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over an exec, so a child started
    by a big parent would report the parent's peak.
    """
    for line in _read("/proc/self/status").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------------------------------------
# FLOPs


def count_flops(onnx_path: str | Path, *, batch: int = 1) -> dict[str, Any]:
    """FLOPs of one forward pass per image: 2 x multiply-adds of Conv, Gemm and MatMul nodes.

    Shapes come from ONNX shape inference with the batch axis fixed; element-wise operators,
    pooling and activations are not counted (they are memory traffic, not arithmetic).
    """
    import onnx

    model = onnx.load(str(onnx_path))
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].dim_value = batch
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    shapes: dict[str, list[int]] = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        shapes[value.name] = [d.dim_value for d in value.type.tensor_type.shape.dim]
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
    params = int(sum(int(np.prod(init.dims)) for init in graph.initializer))
    layers: list[dict[str, Any]] = []
    unknown: list[str] = []
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        out = shapes.get(node.output[0], [])
        if not out or 0 in out:
            unknown.append(node.name)
            continue
        weight = shapes.get(node.input[1], []) if len(node.input) > 1 else []
        if node.op_type == "Conv":
            if len(weight) < 3:
                unknown.append(node.name)
                continue
            macs = int(np.prod(out)) * int(np.prod(weight[1:]))
        else:
            a = shapes.get(node.input[0], [])
            trans_a = any(attr.name == "transA" and attr.i for attr in node.attribute)
            if not a:
                unknown.append(node.name)
                continue
            inner = a[-2] if trans_a else a[-1]
            macs = int(np.prod(out)) * int(inner)
        inp = shapes.get(node.input[0], [])
        # float32 bytes that must at least be read and written once: input, weights, output.
        moved = 4 * (int(np.prod(inp)) if inp else 0) + 4 * int(np.prod(weight or [0])) + 4 * int(np.prod(out))
        layers.append(
            {
                "name": node.name,
                "op": node.op_type,
                "flops": 2 * macs // batch,
                "input": inp,
                "output": out,
                "flop_per_byte": 2 * macs / moved if moved else None,
            }
        )
    total = sum(layer["flops"] for layer in layers)
    return {
        "flops_per_image": int(total),
        "gflops_per_image": total / 1e9,
        "params": params,
        "counted_layers": len(layers),
        "uncounted_layers": unknown,
        "layers": layers,
    }


# ---------------------------------------------------------------------------------------------
# The matrix-multiply ceiling


def _matmul_model(n: int) -> bytes:
    import onnx
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])
    c = helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm", [a, b], [c])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def gemm_ceiling(*, threads: int, sizes: Iterable[int] = GEMM_SIZES, budget_s: float = 1.5) -> dict[str, Any]:
    """Best float32 GEMM GFLOP/s on `threads` threads: numpy (its BLAS) and ONNX Runtime MatMul.

    Run it in a process whose BLAS thread count was fixed before numpy loaded (``--job``).
    """
    import onnxruntime as ort

    from ml.serving.runtime import serving_session_options

    rng = np.random.default_rng(0)
    results: dict[str, dict[str, float]] = {"numpy": {}, "onnxruntime": {}}
    best_runs: dict[str, dict[str, float]] = {"numpy": {}, "onnxruntime": {}}
    for n in sizes:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        flops = 2.0 * n**3
        session = ort.InferenceSession(
            _matmul_model(n), sess_options=serving_session_options(threads=threads), providers=["CPUExecutionProvider"]
        )
        calls: dict[str, Callable[[], object]] = {
            "numpy": partial(np.matmul, a, b),
            "onnxruntime": partial(session.run, None, {"a": a, "b": b}),
        }
        for source, call in calls.items():
            times = time_calls(call, warmup=2, min_runs=5, max_runs=100, budget_s=budget_s)
            results[source][str(n)] = flops / (float(np.median(times)) / 1000.0) / 1e9
            best_runs[source][str(n)] = flops / (min(times) / 1000.0) / 1e9
    best_source, best_size, best = max(
        ((source, size, value) for source, by_size in results.items() for size, value in by_size.items()),
        key=lambda item: item[2],
    )
    return {
        "threads": threads,
        "method": "float32 square GEMM (a @ b), 2*n^3 FLOPs; median run per size, best size and library",
        "gflops": results,
        "gflops_fastest_run": best_runs,
        "best_gflops": best,
        "best_fastest_run_gflops": max(v for by_size in best_runs.values() for v in by_size.values()),
        "best": f"{best_source} n={best_size}",
    }


# ---------------------------------------------------------------------------------------------
# One model through ONNX Runtime / TensorFlow (each in its own process)


def measure_onnx(
    onnx_path: str | Path,
    input_size: int,
    *,
    threads: int | None,
    spin: bool | None = None,
    batches: Sequence[int] = DEFAULT_BATCHES,
    max_runs: int = 200,
    budget_s: float = 8.0,
    plain: bool = False,
) -> dict[str, Any]:
    """Latency and throughput per batch size with the serving session options (or ONNX Runtime's
    own defaults when `plain`)."""
    import onnxruntime as ort

    from ml.serving.runtime import serving_session_options

    rss_before = peak_rss_mb()
    started = time.perf_counter()
    options = ort.SessionOptions() if plain else serving_session_options(threads=threads, spin=spin)
    session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - started) * 1000.0
    name = session.get_inputs()[0].name
    rng = np.random.default_rng(0)
    by_batch = {}
    for batch in batches:
        x = rng.uniform(0, 255, (batch, input_size, input_size, 3)).astype(np.float32)
        runs = max_runs if batch == 1 else max(5, max_runs // 4)
        times = time_calls(partial(session.run, None, {name: x}), max_runs=runs, budget_s=budget_s)
        by_batch[str(batch)] = latency_summary(times, batch=batch)
    return {
        "runtime": "onnxruntime",
        "options": "onnxruntime defaults" if plain else {"threads": threads, "spin": spin},
        "load_ms": load_ms,
        "batches": by_batch,
        "rss_before_load_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
    }


def measure_tensorflow(
    *,
    keras_path: str | None,
    architecture: str | None,
    input_size: int,
    threads: int,
    batches: Sequence[int] = DEFAULT_BATCHES,
    max_runs: int = 100,
    budget_s: float = 8.0,
) -> dict[str, Any]:
    """The same model through TensorFlow: ``tf.function`` (graph mode), same threads."""
    rss_start = peak_rss_mb()
    started = time.perf_counter()
    import tensorflow as tf

    import_s = time.perf_counter() - started
    rss_after_import = peak_rss_mb()
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    if keras_path:
        model = keras.saving.load_model(keras_path, compile=False)
    else:
        from ml.training.architectures import build_model

        assert architecture is not None
        model = build_model(architecture, input_size=input_size, weights=None, seed=0).model
    predict = tf.function(lambda x: model(x, training=False))
    rng = np.random.default_rng(0)
    by_batch = {}
    for batch in batches:
        x = tf.constant(rng.uniform(0, 255, (batch, input_size, input_size, 3)).astype(np.float32))
        runs = max_runs if batch == 1 else max(5, max_runs // 4)
        times = time_calls(partial(_call_and_fetch, predict, x), max_runs=runs, budget_s=budget_s)
        by_batch[str(batch)] = latency_summary(times, batch=batch)
    return {
        "runtime": "tensorflow tf.function",
        "tensorflow": tf.__version__,
        "threads": threads,
        "import_s": import_s,
        "import_rss_mb": rss_after_import - rss_start,
        "batches": by_batch,
        "peak_rss_mb": peak_rss_mb(),
    }


def _call_and_fetch(predict: Callable[[Any], Any], x: Any) -> object:
    return predict(x).numpy()  # .numpy() waits for the result


def layer_profile(
    onnx_path: str | Path, input_size: int, *, threads: int, batch: int, runs: int = 30
) -> dict[str, Any]:
    """Where ONNX Runtime spends the time, per node, from its own profiler (after its graph
    optimisations: fused Conv+ReLU, NCHWc layout). Conv FLOPs come from the profiled shapes."""
    import onnxruntime as ort

    from ml.serving.runtime import serving_session_options

    options = serving_session_options(threads=threads, spin=False)
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.gettempdir()) / f"ml-bench-profile-{os.getpid()}")
    session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).uniform(0, 255, (batch, input_size, input_size, 3)).astype(np.float32)
    for _ in range(3):
        session.run(None, {name: x})
    for _ in range(runs):
        session.run(None, {name: x})
    trace_path = Path(session.end_profiling())
    events = json.loads(trace_path.read_text())
    trace_path.unlink(missing_ok=True)
    nodes: dict[str, dict[str, Any]] = {}
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        args = event.get("args", {})
        node = nodes.setdefault(
            event["name"][: -len("_kernel_time")],
            {"op": args.get("op_name", "?"), "us": [], "flops": _profiled_flops(args)},
        )
        node["us"].append(float(event.get("dur", 0)))
    rows = []
    for node_name, node in nodes.items():
        # The first 3 calls were warm-up.
        samples = node["us"][3:] or node["us"]
        ms = float(np.median(samples)) / 1000.0
        rows.append(
            {
                "node": node_name,
                "op": node["op"],
                "ms": ms,
                "flops": node["flops"],
                "gflops_per_s": (node["flops"] / (ms / 1000.0) / 1e9) if node["flops"] and ms > 0 else None,
            }
        )
    rows.sort(key=lambda row: -row["ms"])
    total_ms = sum(row["ms"] for row in rows)
    by_op: dict[str, float] = {}
    for row in rows:
        by_op[row["op"]] = by_op.get(row["op"], 0.0) + row["ms"]
    return {"batch": batch, "threads": threads, "total_node_ms": total_ms, "by_op_ms": by_op, "nodes": rows}


def _profiled_flops(args: dict[str, Any]) -> int:
    """2 x multiply-adds of a (fused) convolution or dense node from its profiled shapes."""
    op = args.get("op_name", "")
    inputs = [next(iter(item.values())) for item in args.get("input_type_shape", []) if item]
    outputs = [next(iter(item.values())) for item in args.get("output_type_shape", []) if item]
    if not inputs or not outputs:
        return 0
    out = int(np.prod(outputs[0]))
    if op in ("Conv", "FusedConv", "NchwcConv", "QLinearConv", "ConvInteger") and len(inputs) > 1:
        weight = inputs[1] if op != "QLinearConv" else inputs[3]
        return 2 * out * int(np.prod(weight[1:])) if len(weight) >= 3 else 0
    if op in ("FusedGemm", "Gemm", "MatMul", "FusedMatMul", "MatMulInteger", "QLinearMatMul"):
        return 2 * out * int(inputs[0][-1])
    return 0


# ---------------------------------------------------------------------------------------------
# Exporting architectures without a trained artifact (random weights: speed only)


def export_architecture(architecture: str, input_size: int, out_dir: str | Path) -> dict[str, Any]:
    """Build the portal's model for `architecture` with random weights and export it to ONNX."""
    started = time.perf_counter()
    from ml.training.architectures import build_model
    from ml.training.export import export_onnx

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    built = build_model(architecture, input_size=input_size, weights=None, seed=0)
    built.model(np.zeros((1, input_size, input_size, 3), dtype=np.float32))
    export_onnx(built.model, out_dir / "model.onnx")
    reattached = _constant_inputs_to_initializers(out_dir / "model.onnx", built.model)
    info = {
        "name": f"{architecture}-{input_size}-random",
        "architecture": architecture,
        "input_size": input_size,
        "weights": "random (no ImageNet weights here; speed only)",
        "export_s": time.perf_counter() - started,
        "constants_reattached": reattached,
    }
    (out_dir / "speed_only.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def _constant_inputs_to_initializers(onnx_path: Path, model: Any) -> list[str]:
    """Keras' ONNX export leaves a Normalization layer's mean and variance as extra graph inputs
    (caffe-normalised VGGs); put them back as constants so the graph runs on images alone."""
    import onnx
    from onnx import numpy_helper

    graph_model = onnx.load(str(onnx_path))
    extra = list(graph_model.graph.input)[1:]
    if not extra:
        return []
    layer = next((lay for lay in model.layers if lay.name == "normalize"), None)
    mean = np.asarray(getattr(layer, "mean", 0.0), dtype=np.float32)
    variance = np.asarray(getattr(layer, "variance", 1.0), dtype=np.float32)
    names = []
    for value in extra:
        dims = [d.dim_value or 1 for d in value.type.tensor_type.shape.dim]
        source = variance if "sqrt" in value.name.lower() else mean
        array = np.broadcast_to(source.reshape(-1), (int(np.prod(dims)),)).reshape(dims).astype(np.float32)
        graph_model.graph.initializer.append(numpy_helper.from_array(array, value.name))
        graph_model.graph.input.remove(value)
        names.append(value.name)
    onnx.save(graph_model, str(onnx_path))
    return names


# ---------------------------------------------------------------------------------------------
# JPEG decoding: naive against the serving path


def upload_films(films_dir: str | None, *, width: int = 2000, height: int = 1700) -> list[bytes]:
    """Films for the upload benchmarks: the real full-size films of `films_dir` if given, else the real
    chest films the tests ship (tests/fixtures/films) enlarged to a full-size film's pixels. Never drawn
    ones: the input gate refuses those, and a refused film is never given to the model."""
    if films_dir:
        paths = sorted(p for p in Path(films_dir).rglob("*") if p.suffix.lower() in (".jpeg", ".jpg"))
        if paths:
            return [p.read_bytes() for p in paths]
    from PIL import Image

    films = []
    for path in sorted((Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "films").glob("*.jpeg")):
        buffer = io.BytesIO()
        Image.open(path).convert("L").resize((width, height), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
        films.append(buffer.getvalue())
    return films


def synthetic_film(width: int = 2000, height: int = 1700, *, seed: int = 0, quality: int = 90) -> bytes:
    """A full-size grayscale JPEG with a film's structure (body, lungs, ribs, noise), ~0.3-0.6 MB."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy = width / 2, height / 2
    body = 150 - 90 * (((xx - cx) / (0.48 * width)) ** 2 + ((yy - cy) / (0.55 * height)) ** 2)
    for side in (-1, 1):
        lung = ((xx - cx - side * 0.2 * width) / (0.15 * width)) ** 2 + ((yy - cy) / (0.33 * height)) ** 2
        body -= 70 * np.clip(1.2 - lung, 0, 1)
    body += 18 * np.sin(yy / 55.0) * (np.abs(xx - cx) > 0.08 * width)  # ribs
    body += rng.normal(0, 3, body.shape)
    pixels = np.clip(body, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "L").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def decode_naive(data: bytes, input_size: int) -> np.ndarray:
    """What a straightforward implementation does: decode every pixel, then resize."""
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("L").resize((input_size, input_size), Image.Resampling.BILINEAR)
    gray = np.asarray(image, dtype=np.float32)
    return np.repeat(gray[:, :, None], 3, axis=2)


def decode_benchmark(
    *, films: Sequence[Path] = (), sizes: Sequence[int] = (128, 224), runs: int = 15
) -> dict[str, Any]:
    """Median ms per image: naive decode+resize, the serving path (draft), and the upload check
    (the web process decodes every upload in full once to refuse unreadable files)."""
    from ml.serving.decode import decode_image_bytes
    from ml.serving.preprocessing import load_for_model

    sources: list[tuple[str, bytes]] = [("synthetic 2000x1700 grayscale JPEG (q90)", synthetic_film())]
    sources += [(f"{path.parent.name}/{path.name}", path.read_bytes()) for path in films]
    rows = []
    for label, data in sources:
        from PIL import Image

        width, height = Image.open(io.BytesIO(data)).size
        row: dict[str, Any] = {"film": label, "width": width, "height": height, "kb": len(data) / 1024}
        full = time_calls(partial(decode_image_bytes, data), max_runs=runs, budget_s=3)
        row["full_decode_ms"] = float(np.median(full))
        for size in sizes:
            naive = time_calls(partial(decode_naive, data, size), max_runs=runs, budget_s=3)
            draft = time_calls(partial(load_for_model, data, input_size=size), max_runs=runs, budget_s=3)
            row[f"naive_{size}_ms"] = float(np.median(naive))
            row[f"draft_{size}_ms"] = float(np.median(draft))
        rows.append(row)
    summary: dict[str, Any] = {"rows": rows, "sizes": list(sizes), "runs_per_film": runs}
    real = rows[1:]
    if real:
        summary["real_films"] = len(real)
        for key in ["full_decode_ms", *[f"{kind}_{size}_ms" for size in sizes for kind in ("naive", "draft")]]:
            summary[f"real_median_{key}"] = float(np.median([row[key] for row in real]))
    return summary


# ---------------------------------------------------------------------------------------------
# int8 variant of the default model, validated on the manifest's validation split


def validation_split(artifact_dir: Path, data_dir: Path) -> tuple[list[Path], np.ndarray, list[Path]]:
    """The validation (and training) files the artifact's manifest lists (data_files.txt), checked."""
    from ml.serving.artifacts import CLASS_NAMES, read_manifest, sha256_file

    manifest = read_manifest(artifact_dir)
    listing = artifact_dir / str(manifest["data"].get("file_list") or "data_files.txt")
    val_paths: list[Path] = []
    labels: list[int] = []
    train_paths: list[Path] = []
    mismatched = 0
    for line in listing.read_text().splitlines():
        split, class_name, relpath, digest = line.split("\t")
        path = data_dir / relpath
        if split == "validation":
            val_paths.append(path)
            labels.append(CLASS_NAMES.index(class_name))
            mismatched += sha256_file(path) != digest
        elif split == "train":
            train_paths.append(path)
    if mismatched:
        raise ValueError(f"{mismatched} validation files differ from {listing}; wrong data directory?")
    return val_paths, np.array(labels), train_paths


def quantize_default(
    artifact_dir: str | Path, data_dir: str | Path, out_dir: str | Path, *, threads: int, calibration: int = 256
) -> dict[str, Any]:
    """Static (QDQ, per-channel) and dynamic int8 variants; AUC of each and of fp32 on validation."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from sklearn.metrics import roc_auc_score

    from ml.serving.artifacts import read_manifest
    from ml.serving.films import ImageRecord, load_images
    from ml.serving.runtime import serving_session_options
    from ml.serving.variants import quantize_int8

    artifact_dir, data_dir, out_dir = Path(artifact_dir), Path(data_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(artifact_dir)
    size = int(manifest["input_size"])
    fp32_path = artifact_dir / str(manifest["files"].get("onnx") or "model.onnx")
    val_paths, labels, train_paths = validation_split(artifact_dir, data_dir)

    def load(paths: Sequence[Path]) -> np.ndarray:
        return load_images([ImageRecord(path, 0, "") for path in paths], input_size=size, workers=threads)

    started = time.perf_counter()
    val_images = load(val_paths)
    step = max(1, len(train_paths) // calibration)
    calib_images = load(train_paths[::step][:calibration])  # training films only: validation stays unseen
    load_s = time.perf_counter() - started

    def probabilities(path: Path) -> np.ndarray:
        session = ort.InferenceSession(
            str(path), sess_options=serving_session_options(threads=threads), providers=["CPUExecutionProvider"]
        )
        name = session.get_inputs()[0].name
        outs = [session.run(None, {name: val_images[i : i + 64]})[0] for i in range(0, len(val_images), 64)]
        return np.concatenate(outs).reshape(-1).astype(np.float64)

    prepared = out_dir / "model.prepared.onnx"
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    variants = {
        "int8-static-qdq": out_dir / "model.int8-static.onnx",
        "int8-dynamic": out_dir / "model.int8-dynamic.onnx",
    }
    # The serving path's own int8 builder (ml.serving.variants), 7-bit weights as without VNNI.
    quantize_int8(fp32_path, variants["int8-static-qdq"], calib_images, reduce_range=True)
    quantize_dynamic(str(prepared), str(variants["int8-dynamic"]), weight_type=QuantType.QUInt8)
    fp32_auc = float(roc_auc_score(labels, probabilities(fp32_path)))
    rows = [{"variant": "fp32", "path": str(fp32_path), "mb": fp32_path.stat().st_size / 1e6, "auc": fp32_auc}]
    for name, path in variants.items():
        try:
            auc = float(roc_auc_score(labels, probabilities(path)))
        except Exception as exc:  # a variant ONNX Runtime cannot run is reported, not fatal
            rows.append({"variant": name, "path": str(path), "error": str(exc)[:300]})
            continue
        rows.append(
            {
                "variant": name,
                "path": str(path),
                "mb": path.stat().st_size / 1e6,
                "auc": auc,
                "auc_minus_fp32": auc - fp32_auc,
                "within_tolerance": abs(auc - fp32_auc) <= QUANTIZATION_AUC_TOLERANCE,
            }
        )
    prepared.unlink(missing_ok=True)
    return {
        "model": manifest["name"],
        "version": manifest["version"],
        "input_size": size,
        "validation_images": len(val_paths),
        "validation_positives": int(labels.sum()),
        "manifest_validation_auc": manifest["metrics"]["validation"]["roc_auc"],
        "calibration_images": len(calib_images),
        "image_load_s": load_s,
        "tolerance": QUANTIZATION_AUC_TOLERANCE,
        "bf16": "not measured: this CPU has no AVX-512 BF16 or AMX instructions"
        if not (machine_info()["flags"]["avx512_bf16"] or machine_info()["flags"]["amx_bf16"])
        else "not measured here (see the serving variants, ml/serving/variants.py)",
        "variants": rows,
    }


# ---------------------------------------------------------------------------------------------
# Running jobs in fresh processes


def run_job(job: dict[str, Any], *, env: dict[str, str] | None = None, timeout: float = 1800) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; returns its JSON result (or an error)."""
    child_env = dict(os.environ)
    threads = str(job.get("threads") or 1)
    # BLAS and OpenMP pools take their size at load time: fix it before numpy is imported.
    child_env.update({"OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
    child_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    child_env.update(env or {})
    root = Path(__file__).resolve().parent.parent
    completed = subprocess.run(  # noqa: S603 - our own interpreter and module, no shell
        [sys.executable, "-m", "benchmarks.model_latency", "--job", json.dumps(job)],
        cwd=root,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        return {"error": (completed.stderr or completed.stdout).strip()[-1500:], "returncode": completed.returncode}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _job_main(job: dict[str, Any]) -> dict[str, Any]:
    kind = job.pop("kind")
    if kind == "gemm":
        return gemm_ceiling(threads=job["threads"], sizes=job.get("sizes", GEMM_SIZES))
    if kind == "onnx":
        return measure_onnx(job.pop("onnx_path"), job.pop("input_size"), **job)
    if kind == "tensorflow":
        return measure_tensorflow(**job)
    if kind == "profile":
        return layer_profile(job.pop("onnx_path"), job.pop("input_size"), **job)
    if kind == "export":
        return export_architecture(job["architecture"], job["input_size"], job["out_dir"])
    if kind == "quantize":
        return quantize_default(job["artifact_dir"], job["data_dir"], job["out_dir"], threads=job["threads"])
    if kind == "serving_variants":
        from ml.serving.variants import select

        return select(job["artifact_dir"], data_dir=job["data_dir"], cache_dir=Path(job["cache_dir"]),
                      threads=job["threads"], spin=False, force=True)  # fmt: skip
    if kind == "decode":
        return decode_benchmark(films=[Path(p) for p in job.get("films", [])], runs=job.get("runs", 15))
    raise ValueError(f"unknown job kind {kind!r}")


# ---------------------------------------------------------------------------------------------
# Targets: which models to measure


def find_artifacts(folder: str | Path) -> list[Path]:
    """Artifact folders (manifest.json + an ONNX file) under `folder`, sorted."""
    found = []
    for manifest in sorted(Path(folder).rglob("manifest.json")):
        if (manifest.parent / "model.onnx").is_file() and "/cache/" not in manifest.as_posix():
            found.append(manifest.parent)
    return found


def artifact_target(artifact_dir: Path) -> dict[str, Any]:
    from ml.serving.artifacts import read_manifest, sha256_file

    manifest = read_manifest(artifact_dir)
    onnx_path = artifact_dir / str(manifest["files"].get("onnx") or "model.onnx")
    keras_name = manifest["files"].get("keras")
    keras_path = artifact_dir / keras_name if keras_name and (artifact_dir / keras_name).is_file() else None
    validation = manifest.get("metrics", {}).get("validation", {})
    return {
        "name": f"{manifest['name']} ({artifact_dir})",
        "identity": f"{manifest['name']}@{manifest['version']}",
        "source": "trained artifact",
        "artifact": str(artifact_dir),
        "architecture": manifest["architecture"],
        "input_size": int(manifest["input_size"]),
        "onnx_path": str(onnx_path),
        "onnx_sha256": sha256_file(onnx_path),
        "keras_path": str(keras_path) if keras_path else None,
        "validation_auc": validation.get("roc_auc"),
    }


def select_targets(
    *, artifacts: Sequence[str], search: Sequence[str], architectures: Sequence[str], workdir: Path, threads: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(targets, export records). Duplicate ONNX files (same sha256) are measured once."""
    targets: list[dict[str, Any]] = []
    seen: set[str] = set()
    for folder in [*artifacts, *[str(p) for root in search for p in find_artifacts(root)]]:
        target = artifact_target(Path(folder))
        # A packaged copy (ml/default_model) of a run is the same model re-exported: measure it once.
        keys = {target["onnx_sha256"], target["identity"]}
        if keys & seen:
            continue
        seen |= keys
        targets.append(target)
    exports: list[dict[str, Any]] = []
    trained = {target["architecture"] for target in targets}
    if not architectures:
        return targets, exports
    from ml.training.architectures import ARCHITECTURES  # imports Keras: only when exporting

    for architecture in architectures:
        if architecture in trained:
            continue
        size = ARCHITECTURES[architecture].default_input_size
        out_dir = workdir / "models" / f"{architecture}-{size}"
        if not (out_dir / "model.onnx").is_file():
            record = run_job({"kind": "export", "architecture": architecture, "input_size": size,
                              "out_dir": str(out_dir), "threads": threads})  # fmt: skip
            exports.append({"architecture": architecture, **record})
            if "error" in record:
                continue
        targets.append(
            {
                "name": f"{architecture}-{size} (random weights, speed only)",
                "source": "exported with random weights (speed only)",
                "artifact": None,
                "architecture": architecture,
                "input_size": size,
                "onnx_path": str(out_dir / "model.onnx"),
                "keras_path": None,
                "validation_auc": None,
            }
        )
    return targets, exports


# ---------------------------------------------------------------------------------------------
# The whole run


def run_benchmark(
    *,
    artifacts: Sequence[str],
    search: Sequence[str] = (),
    architectures: Sequence[str] = (),
    threads: int = 2,
    batches: Sequence[int] = DEFAULT_BATCHES,
    max_runs: int = 100,
    budget_s: float = 8.0,
    tensorflow: bool = False,
    profile: bool = True,
    variants: bool = True,
    decode: bool = True,
    films: Sequence[Path] = (),
    quantize_data_dir: Path | None = None,
    serving_variants_data_dir: Path | None = None,
    workdir: Path = Path("var/bench"),
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    started = time.perf_counter()
    report: dict[str, Any] = {
        "machine": machine_info(),
        "other_ml_processes": ml_processes(),
        "threads": threads,
        "batches": list(batches),
    }
    log("GEMM ceiling")
    report["ceiling"] = run_job({"kind": "gemm", "threads": threads})
    ceiling = float(report["ceiling"].get("best_gflops") or float("nan"))
    targets, report["exports"] = select_targets(
        artifacts=artifacts, search=search, architectures=architectures, workdir=workdir, threads=threads
    )
    models = []
    for target in targets:
        log(f"model {target['name']}")
        row = dict(target)
        row["onnx_mb"] = Path(target["onnx_path"]).stat().st_size / 1e6
        row["flops"] = {k: v for k, v in count_flops(target["onnx_path"]).items() if k != "layers"}
        flops = row["flops"]["flops_per_image"]
        common = {"onnx_path": target["onnx_path"], "input_size": target["input_size"], "batches": list(batches),
                  "max_runs": max_runs, "budget_s": budget_s}  # fmt: skip
        # spin=False: what the portal's worker uses (settings.INFERENCE_SPIN defaults to off).
        row["onnxruntime"] = run_job({"kind": "onnx", "threads": threads, "spin": False, **common})
        _add_efficiency(row["onnxruntime"], flops, ceiling)
        if tensorflow:
            row["tensorflow"] = run_job(
                {
                    "kind": "tensorflow",
                    "keras_path": target["keras_path"],
                    "architecture": target["architecture"],
                    "input_size": target["input_size"],
                    "threads": threads,
                    "batches": list(batches),
                    "max_runs": max_runs,
                    "budget_s": budget_s,
                }  # fmt: skip
            )
            _add_efficiency(row["tensorflow"], flops, ceiling)
            row["tensorflow_over_onnxruntime"] = _ratios(row["tensorflow"], row["onnxruntime"])
        models.append(row)
    report["models"] = models
    default = models[0] if models else None
    if default is not None and variants:
        log("session options (default model)")
        common = {"onnx_path": default["onnx_path"], "input_size": default["input_size"],
                  "batches": list(batches), "max_runs": max_runs, "budget_s": budget_s}  # fmt: skip
        rows = []
        for label, job in (
            ("ONNX Runtime defaults (no options)", {"plain": True, "threads": None}),
            (f"serving: {threads} threads, spinning on", {"threads": threads, "spin": True}),
            (f"serving: {threads} threads, spinning off", {"threads": threads, "spin": False}),
            ("1 thread", {"threads": 1, "spin": False}),
        ):
            result = run_job({"kind": "onnx", **common, **job})
            _add_efficiency(result, default["flops"]["flops_per_image"], ceiling)
            rows.append({"label": label, **result})
        report["session_variants"] = rows
    if default is not None and profile:
        log("layer profile (default model)")
        report["layer_profile"] = {
            str(batch): run_job(
                {
                    "kind": "profile",
                    "onnx_path": default["onnx_path"],
                    "input_size": default["input_size"],
                    "threads": threads,
                    "batch": batch,
                }  # fmt: skip
            )
            for batch in batches
        }
        report["layer_flops"] = count_flops(default["onnx_path"])["layers"]
    if decode:
        log("JPEG decode")
        report["decode"] = run_job({"kind": "decode", "films": [str(p) for p in films], "threads": 1})
    if default is not None and quantize_data_dir is not None and default.get("artifact"):
        log("int8 variants of the default model")
        quant = run_job(
            {
                "kind": "quantize",
                "artifact_dir": default["artifact"],
                "data_dir": str(quantize_data_dir),
                "out_dir": str(workdir / "quantized"),
                "threads": threads,
            }  # fmt: skip
        )
        for variant in quant.get("variants", []):
            if "error" in variant or variant["variant"] == "fp32":
                continue
            speed = run_job({"kind": "onnx", "onnx_path": variant["path"], "input_size": default["input_size"],
                             "threads": threads, "spin": False, "batches": list(batches), "max_runs": max_runs,
                             "budget_s": budget_s})  # fmt: skip
            variant["onnxruntime"] = speed
            variant["speedup_vs_fp32"] = _ratios(default["onnxruntime"], speed)
        report["quantized"] = quant
    if default is not None and serving_variants_data_dir is not None and default.get("artifact"):
        log("serving variants of the default model (fp32, int8, bf16) on external/")
        report["serving_variants"] = run_job(
            {
                "kind": "serving_variants",
                "artifact_dir": default["artifact"],
                "data_dir": str(serving_variants_data_dir),
                "cache_dir": str(workdir / "variants"),
                "threads": threads,
            }  # fmt: skip
        )
    report["load_average_end"] = list(os.getloadavg())
    report["seconds"] = time.perf_counter() - started
    return report


def _add_efficiency(result: dict[str, Any], flops_per_image: int, ceiling: float) -> None:
    for stats in result.get("batches", {}).values():
        gflops = flops_per_image * stats["images_per_s"] / 1e9
        stats["gflops_per_s"] = gflops
        stats["ceiling_ratio"] = gflops / ceiling if ceiling == ceiling and ceiling > 0 else None


def _ratios(slow: dict[str, Any], fast: dict[str, Any]) -> dict[str, float | None]:
    """p50 of `slow` / p50 of `fast`, per batch size present in both."""
    out: dict[str, float | None] = {}
    for batch, stats in slow.get("batches", {}).items():
        other = fast.get("batches", {}).get(batch)
        out[batch] = stats["p50_ms"] / other["p50_ms"] if other and other["p50_ms"] > 0 else None
    return out


def render_text(report: dict[str, Any]) -> str:
    """A short human-readable summary for the terminal (docs come from benchmarks/report.py)."""
    machine = report["machine"]
    flags = ", ".join(flag for flag, present in machine["flags"].items() if present)
    lines = [
        f"{machine['cpu_model']}, {machine['usable_cpus']} CPUs ({flags}); load {machine['load_average'][0]:.2f}",
        f"GEMM ceiling: {report['ceiling'].get('best_gflops', float('nan')):.1f} GFLOP/s "
        f"({report['ceiling'].get('best')})",
    ]
    for model in report["models"]:
        ort_stats = model["onnxruntime"].get("batches", {})
        parts = [f"{model['name']}: {model['flops']['gflops_per_image']:.2f} GFLOP/img"]
        for batch, stats in ort_stats.items():
            parts.append(
                f"b{batch} {stats['images_per_s']:.1f} img/s p50 {stats['p50_ms']:.2f} ms "
                f"{stats['gflops_per_s']:.1f} GFLOP/s ({100 * (stats['ceiling_ratio'] or 0):.0f}%)"
            )
        if "tensorflow_over_onnxruntime" in model:
            parts.append(f"TF/ORT {model['tensorflow_over_onnxruntime']}")
        lines.append("; ".join(parts))
    variants = report.get("serving_variants")
    if variants:
        from ml.serving.variants import render

        lines.append("Serving variants of the first model:")
        lines.append(render(variants) if "variants" in variants else f"failed: {variants.get('error', '?')[-400:]}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from ml.serving.settings import add_data_dir_argument

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.model_latency",
        description="speed on this CPU: ONNX Runtime (and TensorFlow) per model, GEMM ceiling, JPEG decode",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--artifact", action="append", default=[], help="artifact folder (repeatable)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=100, help="most timed runs per measurement at batch 1")
    parser.add_argument("--search", action="append", default=[], help="also every artifact under this folder")
    parser.add_argument(
        "--architectures",
        default="",
        help="comma-separated, or 'all': architectures with no artifact given are exported with random "
        "weights to measure speed only",
    )
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--budget", type=float, default=8.0, help="seconds per measurement (after min. 5 runs)")
    parser.add_argument("--tensorflow", action="store_true", help="also time each model through tf.function")
    parser.add_argument("--decode", action="store_true", help="also JPEG decode: naive vs draft")
    parser.add_argument("--films-dir", help="full-size films for --decode (default $PNEUMONIA_BENCH_FILMS)")
    parser.add_argument(
        "--quantize", action="store_true", help="int8 variants of the first model, AUC on its validation split"
    )
    parser.add_argument(
        "--variants",
        action="store_true",
        help="the serving variants (fp32, int8, bf16) of the first model checked on <data>/external, with the "
        "choice the worker would make on this CPU (ml/serving/variants.py)",
    )
    add_data_dir_argument(parser)
    parser.add_argument("--workdir", default="var/bench", help="exported and quantized models go here")
    parser.add_argument("--json", help="write the full report here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ml.serving.inference import Predictor
    from ml.serving.settings import require_data_dir

    artifacts = list(args.artifact) or (["ml/default_model"] if not args.search else [])
    for artifact in artifacts:
        Predictor.from_artifact(artifact)  # verifies the file before timing it
    names = [name for name in args.architectures.split(",") if name]
    if names == ["all"]:
        names = list(SPEED_ONLY_ARCHITECTURES)
    if names:
        from ml.training.architectures import ARCHITECTURES  # imports Keras: only when exporting

        unknown = [name for name in names if name not in ARCHITECTURES]
        if unknown:
            raise SystemExit(f"Unknown architecture(s) {unknown}; choose from {', '.join(sorted(ARCHITECTURES))}")
    films_dir = args.films_dir or os.environ.get("PNEUMONIA_BENCH_FILMS")
    films = sorted(p for p in Path(films_dir).rglob("*") if p.suffix.lower() in (".jpeg", ".jpg")) if films_dir else []
    data_dir = None
    if args.quantize or args.variants:
        data_dir = require_data_dir(args.data_dir)
    extras = args.search or names or args.tensorflow or args.decode or args.quantize or len(artifacts) > 1
    report = run_benchmark(
        artifacts=artifacts,
        search=args.search,
        architectures=names,
        threads=args.threads,
        batches=[int(b) for b in args.batches.split(",")],
        max_runs=args.runs,
        budget_s=args.budget,
        tensorflow=args.tensorflow,
        profile=bool(extras),
        variants=bool(extras),
        decode=args.decode,
        films=films,
        quantize_data_dir=data_dir if args.quantize else None,
        serving_variants_data_dir=data_dir if args.variants else None,
        workdir=Path(args.workdir),
        log=(lambda message: print(f"[bench] {message}", file=sys.stderr)) if args.verbose else (lambda _: None),
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(render_text(report))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--job":  # one model in a fresh process (_measure_in_subprocess)
        print(json.dumps(_job_main(json.loads(sys.argv[2]))))
    else:
        raise SystemExit(main())
