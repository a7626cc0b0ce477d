"""The Celery app. Configuration comes from Django settings (CELERY_* names)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings.base")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")

from worker import startup  # noqa: E402, F401 - the worker process's start-up signals
from worker.heartbeat import HeartbeatStep  # noqa: E402
from worker.queues import INFERENCE, ROUTES  # noqa: E402 - reads settings: after DJANGO_SETTINGS_MODULE

# Routes and task options live in one table (worker/queues.py), not in settings and decorators.
app.conf.task_routes = ROUTES
app.conf.task_default_queue = INFERENCE
# Tasks live in the app that owns them (diagnostics/tasks/), found in the installed Django apps.
app.autodiscover_tasks()
# Every worker writes a heartbeat to Redis from its event loop (worker/heartbeat.py): /readyz,
# manage.py worker_health and /metrics read it.
app.steps["worker"].add(HeartbeatStep)
