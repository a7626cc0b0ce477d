"""The Celery app, its queues and routing (queues.py) and the worker process's start-up (startup.py).
The tasks live in the app that owns them (diagnostics/tasks/); the beat schedule is in the settings.

Start a worker with `celery -A worker worker -Q inference` (see README).
"""

from .celery_app import app

__all__ = ("app",)
