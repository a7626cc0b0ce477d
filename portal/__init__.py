"""The portal project: settings, URLs and WSGI entry point.

Importing the Celery app here makes `shared_task`/`app.task` bind to it wherever
Django starts (web process, worker or management command).
"""

from worker.celery_app import app as celery_app

__all__ = ("celery_app",)
