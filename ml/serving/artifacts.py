"""Model artifacts: versioned directories holding model.onnx, model.keras and manifest.json.

No TensorFlow here: the serving path reads manifests too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
ONNX_NAME = "model.onnx"
KERAS_NAME = "model.keras"
DATA_FILES_NAME = "data_files.txt"
CLASS_NAMES = ["NORMAL", "PNEUMONIA"]
# The ONNX output holding a model's class activation map, when its architecture has one (ml/training/export.py).
CAM_OUTPUT = "cam"
# The ONNX output holding P(viral) among pneumonias, when the artifact has a subtype head (ml/training/subtype.py),
# and the two answers it separates (the manifest's subtype.labels; the second is the one its probability is of).
SUBTYPE_OUTPUT = "subtype"
SUBTYPE_LABELS = ("bacterial", "viral")
# Where a class activation map lies on the film, (top, left, bottom, right) as fractions: the whole model
# input, unless a pooling margin keeps only the part inside it (the manifest's heatmap.extent).
FULL_EXTENT = (0.0, 0.0, 1.0, 1.0)

# A model's score is called a probability only where the upper end of the 95 % interval of its cross-fitted
# expected calibration error on films of a new period (metrics.external.ece_crossfit_ci95, ml.training.calibration)
# is at most this; otherwise it is an "AI score". The portal's pages, API, FHIR and SR and the model card
# all ask score_is_probability.
PROBABILITY_MAX_ECE = 0.05


def score_is_probability(metrics: dict[str, Any] | None) -> bool:
    """Whether a model with these manifest metrics may call its score a probability (no interval: no)."""
    interval = ((metrics or {}).get("external") or {}).get("ece_crossfit_ci95")
    if not isinstance(interval, list | tuple) or len(interval) != 2:
        return False
    upper = interval[1]
    return isinstance(upper, int | float) and not isinstance(upper, bool) and upper <= PROBABILITY_MAX_ECE


def heatmap_extent(manifest: dict[str, Any]) -> tuple[float, float, float, float]:
    """The part of the film a model's heatmap covers (manifests from before extents: the whole film)."""
    top, left, bottom, right = (manifest.get("heatmap") or {}).get("extent", FULL_EXTENT)
    return (float(top), float(left), float(bottom), float(right))


REQUIRED_KEYS = (
    "name",
    "version",
    "architecture",
    "input_size",
    "preprocessing_version",
    "class_names",
    "threshold",
    "metrics",
    "files",
    "onnx_sha256",
)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_manifest(artifact_dir: str | Path) -> dict[str, Any]:
    """The manifest as a dict; FileNotFoundError / ValueError name the offending file."""
    path = Path(artifact_dir) / MANIFEST_NAME
    with open(path, encoding="utf-8") as handle:
        manifest = json.load(handle)
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing:
        raise ValueError(f"{path} lacks required keys: {', '.join(missing)}")
    return manifest


def write_manifest(artifact_dir: str | Path, manifest: dict[str, Any]) -> Path:
    path = Path(artifact_dir) / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def utc_stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def utc_now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def new_artifact_dir(root: str | Path, architecture: str) -> tuple[Path, str]:
    """A fresh ``<root>/<arch>-<UTC stamp>`` directory and its version string."""
    version = utc_stamp()
    path = Path(root) / f"{architecture}-{version}"
    suffix = 1
    while path.exists():  # two runs in the same second
        path = Path(root) / f"{architecture}-{version}-{suffix}"
        suffix += 1
    path.mkdir(parents=True)
    return path, version


def code_version(repo_dir: str | Path | None = None) -> str:
    """git sha (with '-dirty' when the tree has local changes), or 'unknown' outside git."""
    cwd = Path(repo_dir) if repo_dir else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # noqa: S607 - git from PATH, read-only queries
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "ml"],  # noqa: S607
            cwd=cwd.parent if cwd.name == "ml" else cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def write_data_file_list(artifact_dir: str | Path, lines: list[str]) -> tuple[str, str]:
    """Write the 'split<TAB>label<TAB>relpath<TAB>sha256' list; return (file name, its digest)."""
    text = "\n".join(lines) + "\n"
    (Path(artifact_dir) / DATA_FILES_NAME).write_text(text, encoding="utf-8")
    return DATA_FILES_NAME, sha256_text(text)
