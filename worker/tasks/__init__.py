"""Celery tasks, one module per concern. Each task takes ids and calls one service."""

from .inference import run_study_inference
from .maintenance import reconcile_stuck_studies

__all__ = ["reconcile_stuck_studies", "run_study_inference"]
