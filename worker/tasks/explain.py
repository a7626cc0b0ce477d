"""Grad-CAM heatmaps, on their own `explain` queue.

This worker and the training worker are the only processes that import TensorFlow (lazily, on
their first task, so never before a prefork pool forks); the inference worker stays on ONNX
Runtime. Start it with `celery -A worker worker -Q explain` (`make worker-explain`).
"""

from __future__ import annotations

from celery import shared_task

from worker.queues import options


@shared_task(**options("worker.tasks.compute_prediction_heatmap"))
def compute_prediction_heatmap(prediction_id: int) -> None:
    from diagnostics.services.heatmaps import prediction_compute_heatmap

    prediction_compute_heatmap(prediction_id=prediction_id)
