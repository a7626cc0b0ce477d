"""Progress reports from a training run, and the way a caller stops one.

The portal's training worker passes a hook to `ml.training.training.train`; the hook gets a
plain dict after every epoch (and every few batches) and may raise
TrainingCancelled, which ends the run cleanly between batches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

ProgressHook = Callable[[dict[str, Any]], None]
BATCH_REPORT_EVERY = 10


class TrainingCancelled(Exception):
    """Raised by a progress hook to stop training; no artifact is written."""


def describe_device() -> str:
    """Where Keras trains: the GPU if its backend sees one, else the CPU."""
    if keras.backend.backend() == "torch":
        import torch

        if torch.cuda.is_available():
            count = torch.cuda.device_count()
            return f"GPU: {torch.cuda.get_device_name(0)}" + (f" (+{count - 1} more)" if count > 1 else "")
        return "CPU"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)
        return f"GPU: {name}" + (f" (+{len(gpus) - 1} more)" if len(gpus) > 1 else "")
    return "CPU"


class ProgressCallback(keras.callbacks.Callback):
    """Forwards Keras progress to a hook as plain dicts (stage, epoch, metrics)."""

    def __init__(self, hook: ProgressHook, *, stage: str, epochs: int) -> None:
        super().__init__()
        self.hook = hook
        self.stage = stage
        self.epochs = epochs
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if batch % BATCH_REPORT_EVERY == 0:
            self.hook(self._event("batch", logs, batch=batch))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.hook(self._event("epoch", logs, epochs_done=epoch + 1))

    def _event(self, kind: str, logs: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
        metrics = {key: float(value) for key, value in (logs or {}).items() if isinstance(value, int | float)}
        return {
            "kind": kind,
            "stage": self.stage,
            "epoch": self.epoch + 1,
            "epochs_total": self.epochs,
            "metrics": metrics,
            **extra,
        }
