"""Pneumonia detection on pediatric chest X-rays: training, evaluation, export and serving.

Plain Python/TensorFlow (no Django). ``ml.serving`` scores a film (decode, input gate, preprocessing,
ONNX inference, heatmaps, artifacts) and never imports TensorFlow or ``ml.training``; ``ml.training``
makes the models. ``python -m ml`` is the command line.
"""
