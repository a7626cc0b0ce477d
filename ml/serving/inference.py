"""ONNX Runtime predictor for the portal: no TensorFlow on the serving path."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort

from ml.serving.artifacts import (
    CAM_OUTPUT,
    CLASS_NAMES,
    ONNX_NAME,
    SUBTYPE_LABELS,
    SUBTYPE_OUTPUT,
    read_manifest,
    sha256_file,
)
from ml.serving.decode import DecodedImage, decode_image_bytes
from ml.serving.gate import ChestFilmCheck, GateError, GateResult, run_gate
from ml.serving.preprocessing import PREPROCESSING_VERSION, decode_side, preprocess, serves_preprocessing
from ml.serving.runtime import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    Runtime,
    choose_providers,
    describe_device,
    load_cuda_libraries,
    serving_session_options,
)

if TYPE_CHECKING:
    from ml.serving.variants import Choice


class ModelArtifactError(RuntimeError):
    """The artifact is missing, tampered with, or built for another preprocessing."""


@dataclass(frozen=True)
class BatchPrediction:
    probabilities: np.ndarray  # (N,) float64 P(PNEUMONIA)
    # (N, h, w) float32 class activation maps, the logit of P(PNEUMONIA) per location (ml/training/export.py);
    # None when the model's architecture gives none.
    cams: np.ndarray | None
    # (N,) float64 P(viral) among pneumonias from the subtype head (ml/training/subtype.py), meaningful only for a
    # film the model calls PNEUMONIA; None when the artifact has no subtype head.
    subtypes: np.ndarray | None = None


class Predictor:
    """Probability of PNEUMONIA for chest films, from one verified ONNX artifact."""

    def __init__(
        self,
        manifest: dict[str, Any],
        session: ort.InferenceSession,
        sha256: str,
        chest_check: ChestFilmCheck,
        runtime: Runtime | None = None,
    ):
        self.manifest = manifest
        self.name: str = str(manifest["name"])
        self.version: str = str(manifest["version"])
        self.architecture: str = str(manifest["architecture"])
        self.input_size: int = int(manifest["input_size"])
        self.threshold: float = float(manifest["threshold"])
        self.preprocessing_version: str = str(manifest["preprocessing_version"])
        self.class_names: list[str] = list(manifest["class_names"])
        self.model_sha256: str = sha256
        self._session = session
        self._chest_check = chest_check
        self._input_name = session.get_inputs()[0].name
        self._probability_name = session.get_outputs()[0].name
        # The manifest says whether the model has a class activation map; the graph must then have it.
        self.has_cam: bool = bool(manifest.get("heatmap"))
        if self.has_cam and CAM_OUTPUT not in {output.name for output in session.get_outputs()}:
            raise ModelArtifactError(
                f"Model {self.name}'s manifest promises a heatmap output '{CAM_OUTPUT}' its ONNX graph lacks."
            )
        # Likewise the subtype head: its threshold comes from the manifest, its P(viral) from the same call.
        subtype = manifest.get("subtype") or {}
        self.has_subtype: bool = bool(subtype.get("onnx_output"))
        if self.has_subtype and SUBTYPE_OUTPUT not in {output.name for output in session.get_outputs()}:
            raise ModelArtifactError(
                f"Model {self.name}'s manifest promises a subtype output '{SUBTYPE_OUTPUT}' its ONNX graph lacks."
            )
        self.subtype_threshold: float | None = float(subtype["threshold"]) if self.has_subtype else None
        if runtime is None:
            provider = session.get_providers()[0]
            runtime = Runtime(provider, describe_device(provider), "fp32", sha256)
        # Where and in which form the model runs: recorded on every prediction.
        self.runtime = runtime

    @classmethod
    def from_artifact(
        cls,
        artifact_dir: str | Path,
        *,
        intra_op_threads: int | None = None,
        spin: bool | None = None,
        variant: Choice | None = None,
        providers: Sequence[str] | None = None,
    ) -> Predictor:
        """Load and verify an artifact. `variant`: a checked CPU variant (ml.serving.variants.read_choice) to run
        instead of the fp32 file, used only on the CPU provider; its file must still be the one checked.
        `providers`: default ml.serving.runtime.choose_providers() (CUDA when there is a GPU, else the CPU)."""
        artifact_dir = Path(artifact_dir)
        manifest = _load_manifest(artifact_dir)
        onnx_path = artifact_dir / str(manifest["files"].get("onnx") or ONNX_NAME)
        if not onnx_path.is_file():
            raise ModelArtifactError(f"Model artifact not found: {onnx_path}")
        sha256 = sha256_file(onnx_path)
        if sha256 != manifest["onnx_sha256"]:
            raise ModelArtifactError(
                f"Model file {onnx_path} does not match its manifest "
                f"(sha256 {sha256[:12]}…, manifest says {str(manifest['onnx_sha256'])[:12]}…)."
            )
        try:
            chest_check = ChestFilmCheck.from_artifact(artifact_dir, manifest, sha256_of=sha256_file)
        except GateError as exc:  # no score without the input gate
            raise ModelArtifactError(str(exc)) from exc
        providers = list(providers) if providers is not None else choose_providers()
        if providers[0] == CUDA_PROVIDER:
            load_cuda_libraries()
        options = serving_session_options(threads=intra_op_threads, spin=spin)
        run_path, run_sha256, variant_name = onnx_path, sha256, "fp32"
        if variant is not None and variant.variant != "fp32" and providers[0] == CPU_PROVIDER:
            # CPU variants were checked against fp32 on this CPU model; never run a file that differs.
            if not variant.path.is_file() or sha256_file(variant.path) != variant.sha256:
                raise ModelArtifactError(
                    f"The {variant.variant} variant {variant.path} is not the file that was checked."
                )
            run_path, run_sha256, variant_name = variant.path, variant.sha256, variant.variant
            for key, value in variant.session_config.items():
                options.add_session_config_entry(key, value)
        try:
            session = ort.InferenceSession(str(run_path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception hierarchy
            raise ModelArtifactError(f"Model file {run_path} cannot be loaded: {exc}") from exc
        provider = session.get_providers()[0]  # what it got: a CUDA session may have fallen back to the CPU
        runtime = Runtime(provider, describe_device(provider), variant_name, run_sha256)
        return cls(manifest, session, sha256, chest_check, runtime)

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) float32 in 0..255 (from ml.serving.decode) -> (N,) P(PNEUMONIA)."""
        (output,) = self._run(images, [self._probability_name])
        return np.asarray(output, dtype=np.float64).reshape(len(images))

    def predict_with_cam(self, images: np.ndarray) -> BatchPrediction:
        """The probabilities and, when the model has them, the class activation maps and P(viral), from one
        model call."""
        names = [self._probability_name]
        names += [CAM_OUTPUT] if self.has_cam else []
        names += [SUBTYPE_OUTPUT] if self.has_subtype else []
        outputs = dict(zip(names, self._run(images, names), strict=True))
        cams = outputs.get(CAM_OUTPUT)
        subtypes = outputs.get(SUBTYPE_OUTPUT)
        return BatchPrediction(
            np.asarray(outputs[self._probability_name], dtype=np.float64).reshape(len(images)),
            None if cams is None else np.asarray(cams, dtype=np.float32),
            None if subtypes is None else np.asarray(subtypes, dtype=np.float64).reshape(len(images)),
        )

    def subtype_label_for(self, probability: float) -> str:
        """'viral' or 'bacterial' for a P(viral), at the manifest's subtype threshold."""
        if self.subtype_threshold is None:
            raise ValueError(f"Model {self.name} has no subtype head.")
        return SUBTYPE_LABELS[1] if probability >= self.subtype_threshold else SUBTYPE_LABELS[0]

    def _run(self, images: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
        expected = (self.input_size, self.input_size, 3)
        if images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(f"expected images of shape (N, {expected}), got {images.shape}")
        batch = np.ascontiguousarray(images, dtype=np.float32)
        return list(self._session.run(outputs, {self._input_name: batch}))

    def decode(self, data: bytes) -> DecodedImage:
        """The file as this model reads it (the decode half of ml.serving.preprocessing.load_for_model)."""
        return decode_image_bytes(data, target_size=decode_side(self.input_size))

    def gate(self, decoded: DecodedImage, *, recorded_view: str = "") -> GateResult:
        """Whether this film may be scored at all (ml.serving.gate): run before every prediction."""
        return run_gate(decoded, self._chest_check, recorded_view=recorded_view)

    def tensor(self, decoded: DecodedImage) -> np.ndarray:
        """The model input for a film that passed the gate (the other half of load_for_model)."""
        return preprocess(decoded.pixels, input_size=self.input_size)

    def prepare(self, data: bytes, *, recorded_view: str = "") -> tuple[GateResult, np.ndarray | None]:
        """Decode, gate and (only if the gate passes) preprocess one file: the serving path, in one place.
        ImageDecodeError for unreadable files."""
        decoded = self.decode(data)
        verdict = self.gate(decoded, recorded_view=recorded_view)
        return verdict, self.tensor(decoded) if verdict.passed else None

    def predict_bytes(self, data: bytes) -> float | GateResult:
        """Probability for one file, or the gate's refusal; ImageDecodeError for unreadable files."""
        verdict, tensor = self.prepare(data)
        if tensor is None:
            return verdict
        return float(self.predict_batch(tensor[None])[0])

    def label_for(self, probability: float) -> str:
        return self.class_names[1] if probability >= self.threshold else self.class_names[0]


def _load_manifest(artifact_dir: Path) -> dict[str, Any]:
    manifest_path = artifact_dir / "manifest.json"
    if not manifest_path.is_file():
        raise ModelArtifactError(f"Model artifact not found: {manifest_path}")
    try:
        manifest = read_manifest(artifact_dir)
    except ValueError as exc:
        raise ModelArtifactError(f"Model manifest is invalid: {exc}") from exc
    if not serves_preprocessing(str(manifest["preprocessing_version"])):
        raise ModelArtifactError(
            f"Model {manifest.get('name')} was trained with preprocessing "
            f"'{manifest['preprocessing_version']}' but this code implements "
            f"'{PREPROCESSING_VERSION}'; retrain or deploy the matching code."
        )
    if list(manifest["class_names"]) != CLASS_NAMES:
        raise ModelArtifactError(
            f"Model {manifest.get('name')} has classes {manifest['class_names']}, expected {CLASS_NAMES}."
        )
    return manifest
