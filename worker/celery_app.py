"""The Celery app. Configuration comes from Django settings (CELERY_* names)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings.base")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")

from worker.queues import INFERENCE, ROUTES  # noqa: E402 - reads settings: after DJANGO_SETTINGS_MODULE

# Routes and task options live in one table (worker/queues.py), not in settings and decorators.
app.conf.task_routes = ROUTES
app.conf.task_default_queue = INFERENCE
app.autodiscover_tasks(["worker"], related_name="tasks")
