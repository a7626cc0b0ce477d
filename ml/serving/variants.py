"""Serving variants of a model on this CPU, and the checked choice among them (no Django, no TensorFlow).

- **fp32**: the artifact's own ONNX file.
- **int8**: static QDQ quantisation (per-channel int8 weights, uint8 activations, MinMax ranges) calibrated
  on the artifact's training films; full-range weights where the CPU has VNNI or AMX-INT8, 7-bit weights
  elsewhere (u8 x s8 products saturate in AVX2's VPMADDUBSW without VNNI).
- **bf16**: only where ONNX Runtime's CPU provider has a bfloat16 path: the fp32 file with its bf16
  fast-math GEMMs switched on, which ONNX Runtime builds for ARM64 only. On x86-64 it has none, AMX or not
  (no session switch, and no bfloat16 Conv kernel in its CPU provider): the variant is reported
  unavailable, with the error a bfloat16 probe model gets.

A variant serves only after it was checked on this CPU model against fp32 on ``<data>/external``: its AUC
within :data:`AUC_TOLERANCE` of fp32's and no film's probability further than
:data:`PROBABILITY_TOLERANCE` from fp32's (the portal shows and thresholds the probability, so an unchanged
AUC alone is not enough). Of the variants that pass, the fastest serves if it beats fp32 by
:data:`MIN_SPEEDUP` at every batch size measured; otherwise fp32 serves. The choice is measured once per
(CPU model + ISA flags + machine + ONNX Runtime version, model sha256) and cached as JSON under a cache
folder, with the sha256 of the variant file that was checked: a file that changed is never served.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ml.serving.artifacts import CLASS_NAMES, DATA_FILES_NAME, ONNX_NAME, read_manifest, sha256_file
from ml.serving.runtime import cpu_flags, cpu_model
from ml.serving.settings import add_data_dir_argument, require_data_dir

VARIANTS = ("fp32", "int8", "bf16")
AUC_TOLERANCE = 0.002
PROBABILITY_TOLERANCE = 0.01
# A passing variant replaces fp32 only if it is at least this much faster at every batch size measured:
# smaller differences are within the noise of a shared machine and buy nothing.
MIN_SPEEDUP = 1.1
CALIBRATION_FILMS = 128
BATCHES = (1, 16)
EXTERNAL_SPLIT = "external"
CACHE_DIR_ENV = "PNEUMONIA_VARIANT_CACHE_DIR"
# "auto" (default): serve the cached, checked choice; "fp32": always the artifact's own file.
MODE_ENV = "PNEUMONIA_SERVING_VARIANT"
BF16_FASTMATH_KEY = "mlas.enable_gemm_fastmath_arm64_bfloat16"
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
ARM64 = ("aarch64", "arm64")

Log = Callable[[str], None]


@dataclass(frozen=True)
class Choice:
    """The variant a worker serves for one model on this CPU, as checked and cached."""

    variant: str
    path: Path
    sha256: str
    session_config: dict[str, str] = field(default_factory=dict)
    reason: str = ""


@dataclass(frozen=True)
class _Variant:
    name: str
    path: Path
    session_config: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Identity and cache


def serving_mode() -> str:
    """'auto' or 'fp32' (from PNEUMONIA_SERVING_VARIANT); anything else is refused."""
    mode = os.environ.get(MODE_ENV, "auto").strip().lower() or "auto"
    if mode not in ("auto", "fp32"):
        raise ValueError(f"{MODE_ENV} must be 'auto' or 'fp32', not {mode!r}")
    return mode


def cache_dir_from_env(default: str | Path) -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV) or default)


def identity(model_sha256: str) -> dict[str, Any]:
    """What a choice is valid for: the CPU (model, ISA flags, architecture), ONNX Runtime, the model."""
    import onnxruntime as ort

    return {
        "cpu_model": cpu_model(),
        "isa_flags": sorted(flag for flag, present in cpu_flags().items() if present),
        "machine": platform.machine(),
        "onnxruntime": ort.__version__,
        "model_sha256": model_sha256,
    }


def choice_path(cache_dir: Path, ident: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir / f"choice-{ident['model_sha256'][:12]}-{digest}.json"


def _fp32_path(artifact_dir: Path, manifest: dict[str, Any]) -> Path:
    return artifact_dir / str(manifest["files"].get("onnx") or ONNX_NAME)


def read_choice(artifact_dir: str | Path, *, cache_dir: Path) -> tuple[Choice | None, str]:
    """The cached choice for this model on this CPU, if one exists and its file is the one checked;
    else None and why."""
    artifact_dir = Path(artifact_dir)
    manifest = read_manifest(artifact_dir)
    ident = identity(str(manifest["onnx_sha256"]))
    path = choice_path(cache_dir, ident)
    try:
        entry = json.loads(path.read_text())
    except FileNotFoundError:
        return None, f"no variant choice measured for this CPU ({ident['cpu_model']}) and model yet ({path})"
    except (OSError, ValueError) as error:
        return None, f"the variant choice {path} cannot be read: {error}"
    if entry.get("identity") != ident:
        return None, f"the variant choice {path} was measured for something else"
    chosen = next((row for row in entry.get("variants", []) if row["variant"] == entry.get("chosen")), None)
    if chosen is None:
        return None, f"the variant choice {path} names no measured variant"
    variant_path = Path(chosen["path"])
    if chosen["variant"] == "fp32":
        variant_path = _fp32_path(artifact_dir, manifest)
    if not variant_path.is_file() or sha256_file(variant_path) != chosen["sha256"]:
        return None, f"the {chosen['variant']} file {variant_path} is not the one that was checked"
    config = dict(chosen.get("session_config") or {})
    return Choice(chosen["variant"], variant_path, chosen["sha256"], config, str(entry.get("reason", ""))), ""


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One measurement per cache entry at a time, across processes (the others wait, then read it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------
# Building the variants


def int8_reduce_range(flags: dict[str, bool]) -> bool:
    """7-bit weights unless the CPU multiplies u8 x s8 without saturating (VNNI, AMX-INT8)."""
    return not any(flags.get(flag) for flag in VNNI_FLAGS)


def bf16_session_config(*, machine: str | None = None) -> tuple[dict[str, str] | None, str]:
    """(session config entries for bf16, '') where ONNX Runtime has a CPU bf16 path, else (None, why)."""
    import onnxruntime as ort

    machine = machine or platform.machine()
    if machine.lower() in ARM64:
        return {BF16_FASTMATH_KEY: "1"}, ""
    hardware = [flag for flag in ("amx_bf16", "avx512_bf16") if cpu_flags().get(flag)]
    return None, (
        f"ONNX Runtime {ort.__version__}'s CPU provider has no bfloat16 path on {machine}"
        f"{' (this CPU has ' + ', '.join(hardware) + ')' if hardware else ''}: its bf16 fast-math switch "
        f"({BF16_FASTMATH_KEY}) is for ARM64 only, and a bfloat16 model (ONNX has bfloat16 Conv since opset 22) "
        f"{_bf16_probe()}"
    )


def _bf16_probe() -> str:
    """What ONNX Runtime's CPU provider says to a one-node bfloat16 Conv (what this project's models are made of)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [1, 4, 8, 8])
    w = helper.make_tensor_value_info("w", TensorProto.BFLOAT16, [4, 4, 3, 3])
    y = helper.make_tensor_value_info("y", TensorProto.BFLOAT16, None)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "bf16_probe", [x, w], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    model.ir_version = 10
    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        return f"is refused ({str(error).split(':', 2)[-1].strip()[:160]})"
    return "loads its Conv probe, but no bf16 variant is built from an fp32 model yet"


def calibration_films(artifact_dir: Path, data_dir: Path, count: int) -> list[Path]:
    """Training films only, evenly spaced: the ones the manifest lists, else ``<data>/train``."""
    listing = artifact_dir / DATA_FILES_NAME
    paths: list[Path] = []
    if listing.is_file():
        for line in listing.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) == 4 and parts[0] == "train" and (data_dir / parts[2]).is_file():
                paths.append(data_dir / parts[2])
    if not paths:
        from ml.serving.films import list_images

        paths = [record.path for record in list_images(data_dir, "train")]
    step = max(1, len(paths) // count)
    return paths[::step][:count]


def quantize_int8(fp32_path: Path, out_path: Path, calibration: np.ndarray, *, reduce_range: bool) -> None:
    """Static QDQ int8 model of `fp32_path` calibrated on `calibration` (N,S,S,3), written atomically."""
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    input_name = ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([{input_name: calibration[i : i + 16]} for i in range(0, len(calibration), 16)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        written = Path(tmp) / out_path.name
        quantize_static(
            str(prepared),
            str(written),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        os.replace(written, out_path)


# ---------------------------------------------------------------------------------------------
# Measuring and deciding


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half), without scikit-learn."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if not positives or not negatives:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    start = 0
    while start < len(scores):  # average ranks over ties
        end = start
        while end + 1 < len(scores) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return float((ranks[labels].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def _session(variant: _Variant, *, threads: int | None, spin: bool | None) -> Any:
    import onnxruntime as ort

    from ml.serving.runtime import serving_session_options

    options = serving_session_options(threads=threads, spin=spin)
    for key, value in variant.session_config.items():
        options.add_session_config_entry(key, value)
    return ort.InferenceSession(str(variant.path), sess_options=options, providers=["CPUExecutionProvider"])


def measure(
    variants: Sequence[_Variant],
    images: np.ndarray,
    labels: np.ndarray,
    *,
    threads: int | None,
    spin: bool | None = False,
    threshold: float = 0.5,
    batches: Sequence[int] = BATCHES,
    rounds: int = 3,
    seconds_per_round: float = 1.5,
    log: Log = lambda _: None,
) -> list[dict[str, Any]]:
    """Probabilities on `images` (AUC, largest difference to the first variant, label flips at
    `threshold`) and p50 latency per batch size, the variants timed in turns so drift hits them alike."""
    sessions = {variant.name: _session(variant, threads=threads, spin=spin) for variant in variants}
    rows: list[dict[str, Any]] = []
    reference: np.ndarray | None = None
    for variant in variants:
        session = sessions[variant.name]
        name = session.get_inputs()[0].name
        probs = np.concatenate(
            [session.run(None, {name: images[i : i + 32]})[0].reshape(-1) for i in range(0, len(images), 32)]
        ).astype(np.float64)
        reference = probs if reference is None else reference
        delta = np.abs(probs - reference)
        rows.append(
            {
                "variant": variant.name,
                "path": str(variant.path),
                "sha256": sha256_file(variant.path),
                "mb": variant.path.stat().st_size / 1e6,
                "session_config": dict(variant.session_config),
                "auc": roc_auc(labels, probs),
                "max_abs_probability_difference": float(delta.max()),
                "mean_abs_probability_difference": float(delta.mean()),
                "label_flips": int(((probs >= threshold) != (reference >= threshold)).sum()),
                "times_ms": {str(batch): [] for batch in batches},
            }
        )
        log(f"{variant.name}: AUC {rows[-1]['auc']:.4f}, max |Δp| {rows[-1]['max_abs_probability_difference']:.4f}")
    rng = np.random.default_rng(0)
    inputs = {batch: rng.uniform(0, 255, (batch, *images.shape[1:])).astype(np.float32) for batch in batches}
    for round_index in range(rounds):
        for row in rows if round_index % 2 == 0 else reversed(rows):
            session = sessions[row["variant"]]
            name = session.get_inputs()[0].name
            for batch in batches:
                row["times_ms"][str(batch)] += _time(session, name, inputs[batch], seconds_per_round)
    for row in rows:
        row["p50_ms"] = {batch: float(np.median(times)) for batch, times in row["times_ms"].items()}
        row["runs"] = {batch: len(times) for batch, times in row["times_ms"].items()}
        del row["times_ms"]
        log(f"{row['variant']}: p50 " + ", ".join(f"b{b} {ms:.2f} ms" for b, ms in row["p50_ms"].items()))
    return rows


def _time(session: Any, name: str, x: np.ndarray, budget_s: float, *, min_runs: int = 5) -> list[float]:
    session.run(None, {name: x})  # warm-up
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < min_runs or time.perf_counter() < deadline:
        started = time.perf_counter()
        session.run(None, {name: x})
        times.append((time.perf_counter() - started) * 1000.0)
    return times


def decide(
    rows: list[dict[str, Any]],
    *,
    auc_tolerance: float = AUC_TOLERANCE,
    probability_tolerance: float = PROBABILITY_TOLERANCE,
    min_speedup: float = MIN_SPEEDUP,
) -> tuple[str, str]:
    """(chosen variant, why) from measured rows, the first of which is fp32; marks each row's verdict.

    Unavailable rows (with "unavailable") never pass; fp32 always does.
    """
    fp32 = rows[0]
    best, best_speed = fp32, 1.0
    for row in rows:
        if row is fp32:
            row.update(passed=True, speedup={b: 1.0 for b in fp32["p50_ms"]}, failed_because=[])
            continue
        if "unavailable" in row:
            row.update(passed=False, failed_because=["unavailable on this CPU/ONNX Runtime"])
            continue
        failed = []
        auc_delta = row["auc"] - fp32["auc"]
        row["auc_minus_fp32"] = auc_delta
        if not abs(auc_delta) <= auc_tolerance:
            failed.append(f"AUC {row['auc']:.4f} is {auc_delta:+.4f} from fp32's (allowed ±{auc_tolerance})")
        if not row["max_abs_probability_difference"] <= probability_tolerance:
            failed.append(
                f"a probability differs from fp32's by {row['max_abs_probability_difference']:.4f} "
                f"(allowed {probability_tolerance})"
            )
        row["speedup"] = {b: fp32["p50_ms"][b] / ms for b, ms in row["p50_ms"].items() if ms > 0}
        row.update(passed=not failed, failed_because=failed)
        slowest = min(row["speedup"].values(), default=0.0)
        if not failed and slowest >= min_speedup and slowest > best_speed:
            best, best_speed = row, slowest
    if best is fp32:
        passing = [row["variant"] for row in rows[1:] if row.get("passed")]
        why = (
            f"{', '.join(passing)} passed the checks but is not {min_speedup}x faster at every batch size"
            if passing
            else "no other variant passed the checks"
        )
        return "fp32", why
    return best["variant"], (
        f"passed (AUC {best['auc_minus_fp32']:+.4f} from fp32, max |Δp| "
        f"{best['max_abs_probability_difference']:.4f}) and is at least {best_speed:.2f}x fp32's speed"
    )


# ---------------------------------------------------------------------------------------------
# The whole selection


def select(
    artifact_dir: str | Path,
    *,
    data_dir: str | Path,
    cache_dir: Path,
    threads: int | None = None,
    spin: bool | None = False,
    calibration_count: int = CALIBRATION_FILMS,
    seconds_per_round: float = 1.5,
    force: bool = False,
    log: Log = lambda _: None,
) -> dict[str, Any]:
    """Build, check and time every variant of the artifact's model on this CPU; cache and return the
    record (the cached one unless `force`)."""
    from ml.serving.films import list_images, load_images

    artifact_dir, data_dir = Path(artifact_dir), Path(data_dir)
    manifest = read_manifest(artifact_dir)
    if list(manifest["class_names"]) != CLASS_NAMES:
        raise ValueError(f"{artifact_dir}: unexpected classes {manifest['class_names']}")
    fp32_path = _fp32_path(artifact_dir, manifest)
    model_sha256 = sha256_file(fp32_path)
    if model_sha256 != manifest["onnx_sha256"]:
        raise ValueError(f"{fp32_path} does not match its manifest")
    ident = identity(model_sha256)
    path = choice_path(cache_dir, ident)
    with _locked(path):
        if not force and path.is_file():
            cached: dict[str, Any] = json.loads(path.read_text())
            if cached.get("identity") == ident:
                log(f"cached: {path}")
                return cached
        started = time.perf_counter()
        size = int(manifest["input_size"])
        external = list_images(data_dir, EXTERNAL_SPLIT)
        images = load_images(external, input_size=size)
        labels = np.array([record.label for record in external])
        variants = [_Variant("fp32", fp32_path)]
        unavailable: dict[str, str] = {}
        films = calibration_films(artifact_dir, data_dir, calibration_count)
        reduce_range = int8_reduce_range(cpu_flags())
        int8_path = cache_dir / model_sha256[:16] / f"model.int8{'-7bit' if reduce_range else ''}.onnx"
        try:
            if not int8_path.is_file():
                log(f"int8: quantizing, calibrated on {len(films)} training films")
                from ml.serving.films import ImageRecord

                calibration = load_images([ImageRecord(p, 0, "") for p in films], input_size=size)
                quantize_int8(fp32_path, int8_path, calibration, reduce_range=reduce_range)
            variants.append(_Variant("int8", int8_path))
        except Exception as error:  # a variant that cannot be built is reported, never served
            unavailable["int8"] = f"quantization failed: {str(error)[:300]}"
        bf16_config, why_not = bf16_session_config()
        if bf16_config is None:
            unavailable["bf16"] = why_not
        else:
            variants.append(_Variant("bf16", fp32_path, bf16_config))
        rows = measure(
            variants,
            images,
            labels,
            threads=threads,
            spin=spin,
            threshold=float(manifest["threshold"]),
            seconds_per_round=seconds_per_round,
            log=log,
        )
        rows += [{"variant": name, "unavailable": reason} for name, reason in unavailable.items()]
        rows.sort(key=lambda row: VARIANTS.index(row["variant"]))
        chosen, reason = decide(rows)
        entry = {
            "identity": ident,
            "model": f"{manifest['name']}@{manifest['version']}",
            "chosen": chosen,
            "reason": reason,
            "tolerances": {"auc": AUC_TOLERANCE, "probability": PROBABILITY_TOLERANCE, "min_speedup": MIN_SPEEDUP},
            "external": {"films": len(external), "positives": int(labels.sum()), "folder": str(data_dir / "external")},
            "threshold": float(manifest["threshold"]),
            "calibration_films": len(films),
            "int8_reduce_range": reduce_range,
            "threads": threads,
            "spin": spin,
            "cpu_flags": cpu_flags(),
            "variants": rows,
            "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "seconds": time.perf_counter() - started,
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(entry, indent=2) + "\n")
        os.replace(tmp, path)
        log(f"chose {chosen}: {reason} ({path})")
        return entry


def ensure_choice(
    artifact_dir: str | Path,
    *,
    data_dir: str | Path | None,
    cache_dir: Path,
    threads: int | None = None,
    spin: bool | None = False,
    timeout_s: float = 1800.0,
) -> tuple[Choice | None, str]:
    """The cached choice, measured first (in a child process: ``python -m ml variants``) when there is
    none and `data_dir` has an external split. None and why when there is no checked choice."""
    choice, why = read_choice(artifact_dir, cache_dir=cache_dir)
    if choice is not None:
        return choice, ""
    if not data_dir or not (Path(data_dir) / EXTERNAL_SPLIT).is_dir():
        return None, f"{why}; no data folder with {EXTERNAL_SPLIT}/ is configured to measure one"
    # Absolute paths: the child runs in the repository root, wherever this process runs.
    command = [sys.executable, "-m", "ml", "variants", "--artifact", str(Path(artifact_dir).resolve()),
               "--data-dir", str(Path(data_dir).resolve()), "--cache-dir", str(cache_dir.resolve())]  # fmt: skip
    if threads:
        command += ["--threads", str(threads)]
    if spin:
        command.append("--spin")
    root = Path(__file__).resolve().parent.parent
    try:
        completed = subprocess.run(  # noqa: S603 - our own interpreter and module, no shell
            command, cwd=root, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return None, f"measuring the variants took longer than {timeout_s:.0f} s"
    if completed.returncode != 0:
        return None, f"measuring the variants failed: {(completed.stderr or completed.stdout).strip()[-400:]}"
    return read_choice(artifact_dir, cache_dir=cache_dir)


def render(entry: dict[str, Any]) -> str:
    """The record as text: the machine, then one line per variant, then the choice."""
    ident = entry["identity"]
    lines = [
        f"CPU: {ident['cpu_model']} ({ident['machine']}); ISA flags: {', '.join(ident['isa_flags']) or 'none'}; "
        f"ONNX Runtime {ident['onnxruntime']}; threads {entry.get('threads') or 'ONNX Runtime default'}",
        f"model {entry['model']}; external/: {entry['external']['films']} films "
        f"({entry['external']['positives']} pneumonia); int8 calibrated on {entry['calibration_films']} training "
        f"films{', 7-bit weights' if entry.get('int8_reduce_range') else ''}",
    ]
    for row in entry["variants"]:
        if "unavailable" in row:
            lines.append(f"  {row['variant']:5} unavailable: {row['unavailable']}")
            continue
        speedup = row.get("speedup", {})
        speed = ", ".join(f"b{b} {ms:.2f} ms ({speedup.get(b, 1.0):.2f}x)" for b, ms in row["p50_ms"].items())
        verdict = "passes" if row.get("passed") else "fails: " + "; ".join(row.get("failed_because", []))
        lines.append(
            f"  {row['variant']:5} {row['mb']:.1f} MB  AUC {row['auc']:.4f}  max |Δp| "
            f"{row['max_abs_probability_difference']:.4f}  label flips {row['label_flips']}  p50 {speed}  {verdict}"
        )
    lines.append(f"chosen: {entry['chosen']} ({entry['reason']})")
    return "\n".join(lines)


# --- python -m ml variants ----------------------------------------------------------------------


def variants_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_dir_argument(parser)
    parser.add_argument("--artifact", required=True)
    parser.add_argument(
        "--cache-dir", help="where choices and variant files go (default $PNEUMONIA_VARIANT_CACHE_DIR or var/variants)"
    )
    parser.add_argument("--threads", type=int, help="intra-op threads, as the worker runs (default: ONNX Runtime's)")
    parser.add_argument("--spin", action="store_true", help="let idle threads spin, as INFERENCE_SPIN=1 does")
    parser.add_argument("--calibration-films", type=int, default=128)
    parser.add_argument("--force", action="store_true", help="measure again even if a choice is cached")
    parser.add_argument("--json", help="also write the record here")


def variants_command(args: argparse.Namespace) -> int:
    data_dir = require_data_dir(args.data_dir)
    entry = select(
        args.artifact,
        data_dir=data_dir,
        cache_dir=Path(args.cache_dir) if args.cache_dir else cache_dir_from_env("var/variants"),
        threads=args.threads,
        spin=args.spin,
        calibration_count=args.calibration_films,
        force=args.force,
        log=(lambda message: print(f"[variants] {message}", file=sys.stderr)) if args.verbose else (lambda _: None),
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(entry, indent=2) + "\n", encoding="utf-8")
    print(render(entry))
    return 0
