"""Where and how the serving model runs: ONNX Runtime's execution provider and session options, the device,
the CPU's identity.

No Django and no TensorFlow. The inference worker asks :func:`choose_providers` once per model load:
CUDA when ONNX Runtime offers it (the onnxruntime-gpu wheel, requirements-gpu.txt) *and* a GPU is
visible to this process, else the CPU. onnxruntime-gpu lists CUDAExecutionProvider as available even
on a machine without a GPU (and would then fall back to the CPU with only a warning), so both are
checked, and the provider a session really got is read back from the session, not assumed.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnxruntime

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
# The flags that decide which kernels ONNX Runtime's CPU provider (MLAS) dispatches to.
ISA_FLAGS = (
    "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni",
    "amx_tile", "amx_bf16", "amx_int8",
)  # fmt: skip
NVIDIA_GPUS_DIR = Path("/proc/driver/nvidia/gpus")
_HIDDEN = {"", "-1", "none", "nodevfiles", "void"}


def gpu_visible(*, environ: Mapping[str, str] | None = None, gpus_dir: Path = NVIDIA_GPUS_DIR) -> bool:
    """Whether this process may use an NVIDIA GPU: the driver lists one and CUDA_VISIBLE_DEVICES does
    not hide them all (unset means every GPU is visible)."""
    environ = os.environ if environ is None else environ
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip().lower() in _HIDDEN:
        return False
    try:
        return any(gpus_dir.iterdir())
    except OSError:
        return False


def choose_providers(*, available: Sequence[str] | None = None, gpu: bool | None = None) -> list[str]:
    """The execution providers for a serving session, best first.

    ``available``: what ONNX Runtime offers (default ``onnxruntime.get_available_providers()``);
    ``gpu``: whether a GPU is visible (default :func:`gpu_visible`). Both are parameters so that the
    choice is tested without a GPU.
    """
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    if gpu is None:
        gpu = gpu_visible()
    if CUDA_PROVIDER in available and gpu:
        return [CUDA_PROVIDER, CPU_PROVIDER]
    return [CPU_PROVIDER]


def load_cuda_libraries() -> None:
    """Let ONNX Runtime find CUDA and cuDNN where the GPU image has them: the nvidia-* pip wheels that
    tensorflow[and-cuda] installs (requirements-gpu.txt), not on the library path. Without them the CUDA
    provider fails to start and the session falls back to the CPU (which the recorded provider shows)."""
    import onnxruntime as ort

    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        preload(directory="")  # nvidia site packages first, then the default search path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (what `lscpu` calls Model name)."""
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name") or line.startswith("Model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> dict[str, bool]:
    """Which of :data:`ISA_FLAGS` this CPU reports."""
    flags_line = next((line for line in _read("/proc/cpuinfo").splitlines() if line.startswith("flags")), "")
    present = set(flags_line.split(":", 1)[1].split()) if ":" in flags_line else set()
    return {flag: flag in present for flag in ISA_FLAGS}


def gpu_name(*, gpus_dir: Path = NVIDIA_GPUS_DIR) -> str:
    """The first visible NVIDIA GPU's model, from the driver's /proc files ('' if unknown)."""
    try:
        for gpu in sorted(gpus_dir.iterdir()):
            for line in _read(str(gpu / "information")).splitlines():
                if line.startswith("Model:"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def describe_device(provider: str) -> str:
    """'GPU: <model>' for the CUDA provider, 'CPU: <model>' otherwise (recorded on every prediction)."""
    if provider == CUDA_PROVIDER:
        return f"GPU: {gpu_name() or 'CUDA device'}"
    return f"CPU: {cpu_model()}"


@dataclass(frozen=True)
class Runtime:
    """How one loaded model runs: provider, device and the served variant of its file."""

    provider: str
    device: str
    variant: str  # fp32 | int8 | bf16
    variant_sha256: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def serving_session_options(*, threads: int | None = None, spin: bool | None = None) -> onnxruntime.SessionOptions:
    """The ONNX Runtime settings of the serving path (``python -m benchmarks.model_latency`` measures these).

    ``threads``: intra-op threads (None: ONNX Runtime uses one per physical core). One
    inter-op thread: thread pools are per session, and one session per worker process
    avoids oversubscription. ``spin``: whether idle pool threads busy-wait for the next
    operator; None keeps ONNX Runtime's default (on). Off gives the cores back to the web
    and database processes between requests, at a small cost per call (see docs/performance.md).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if spin is not None:
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return options
