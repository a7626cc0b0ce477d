"""Command line of the ml package: python -m ml <command> [flags] (python -m ml <command> --help).

Each command lives in the module that implements it, as ``<command>_arguments(parser)`` and
``<command>_command(args) -> int``; this module only wires them. A command's module is imported only when
that command runs, so ``python -m ml --help`` loads neither TensorFlow nor scikit-learn. Speed on this
CPU is measured outside the library: ``python -m benchmarks.model_latency``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from collections.abc import Callable, Sequence

# command: (the module that implements it, one line of help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("ml.training.training", "train one architecture and write a versioned artifact"),
    "evaluate": ("ml.training.evaluation", "run an artifact (ONNX) on a folder; print JSON"),
    "heatmaps": (
        "ml.training.evaluation",
        "where an artifact's heatmaps put their evidence on a split's flagged pneumonia films",
    ),
    "teacher-scores": ("ml.training.evaluation", "mean score of artifacts (Keras) on a split: soft labels to distil"),
    "export": ("ml.training.packaging", "re-export ONNX from model.keras, verify parity, package for serving"),
    "compare": ("ml.training.comparison", "train every architecture under a budget; write the report"),
    "calibrate": (
        "ml.training.calibration",
        "fold Platt scaling fitted on external/ into the model; threshold for a sensitivity there",
    ),
    "subtype": (
        "ml.training.subtype",
        "bacterial or viral: fit a head on an artifact's backbone, calibrated on external/, into its ONNX graph",
    ),
    "gate": ("ml.training.gate_fit", "the input gate: fit it into an artifact, make the non-chest corpus, report"),
    "variants": (
        "ml.serving.variants",
        "check fp32/int8/bf16 variants of a model on external/ on this CPU and cache the one to serve",
    ),
    "split": ("ml.training.data", "show the patient-grouped split; optionally write the file list"),
}


def _implementation(command: str, part: str) -> Callable:
    module, _ = COMMANDS[command]
    return getattr(importlib.import_module(module), f"{command.replace('-', '_')}_{part}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every command is listed; only `command`'s own flags are loaded (from its module)."""
    parser = argparse.ArgumentParser(prog="python -m ml", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_line) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_line)
        if name == command:
            _implementation(name, "arguments")(command_parser)
    return parser


def _command_named(argv: Sequence[str]) -> str | None:
    """The command in argv: the first word that is not an option (the top level has only -h and -v)."""
    return next((word for word in argv if not word.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    import sys

    words = list(sys.argv[1:] if argv is None else argv)
    command = _command_named(words)
    args = build_parser(command if command in COMMANDS else None).parse_args(words)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(name)s %(message)s"
    )
    return int(_implementation(args.command, "command")(args))
