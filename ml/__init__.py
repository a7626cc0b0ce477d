"""Pneumonia detection on pediatric chest X-rays: training, evaluation, export and serving.

Plain Python/TensorFlow (no Django). The serving modules ``ml.preprocessing``,
``ml.inference`` and ``ml.artifacts`` never import TensorFlow.
"""
