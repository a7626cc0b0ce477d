"""Celery tasks, one module per concern. Each task takes ids and calls one service."""

from .inference import run_study_inference

__all__ = ["run_study_inference"]
