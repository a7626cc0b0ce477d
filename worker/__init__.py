"""Celery application, queues, tasks and beat schedule.

Start a worker with `celery -A worker worker -Q inference` (see README).
"""

from .celery_app import app

__all__ = ("app",)
