"""Every task has its queue and options in worker/queues.py, only inference workers preload a model, and
worker/ imports nothing back from the app whose tasks it runs."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import diagnostics.tasks
from worker import celery_app, startup
from worker.queues import INFERENCE, MAINTENANCE, ROUTES, TASKS, TRAINING

WORKER = Path(startup.__file__).parent


def test_every_registered_task_is_routed_by_the_one_table():
    celery_app.app.loader.import_default_modules()  # what a worker process does at start: autodiscovery
    ours = {name for name in celery_app.app.tasks if name.startswith("worker.tasks.")}
    assert ours == set(TASKS) == set(ROUTES)
    assert celery_app.app.conf.task_routes == ROUTES
    assert ROUTES["worker.tasks.reconcile_stuck_studies"]["queue"] == MAINTENANCE  # runs when inference is stuck
    assert ROUTES["worker.tasks.deliver_study_webhook"]["queue"] == INFERENCE
    assert ROUTES["worker.tasks.run_training"]["queue"] == TRAINING
    # Heatmaps are stored with their predictions by the inference task: no queue of their own.
    assert {route["queue"] for route in ROUTES.values()} == {INFERENCE, MAINTENANCE, TRAINING}
    task = celery_app.app.tasks["worker.tasks.run_study_inference"]
    assert task.acks_late and task.reject_on_worker_lost and task.soft_time_limit == 120


def test_only_a_worker_consuming_the_inference_queue_preloads_the_model(monkeypatch):
    import diagnostics.services.inference as inference_services

    loaded = []
    monkeypatch.setattr(inference_services, "preload_serving_models", lambda: loaded.append(True))
    for queues, expected in (({MAINTENANCE: None}, []), ({TRAINING: None}, []), ({INFERENCE: None}, [True])):
        loaded.clear()
        monkeypatch.setattr(startup, "_consumed_queues", set())
        monkeypatch.setattr(startup, "_before_fork", [])  # measuring the serving variants is not this test's
        worker = SimpleNamespace(app=SimpleNamespace(amqp=SimpleNamespace(queues=SimpleNamespace(consume_from=queues))))
        startup._remember_consumed_queues(sender="w", instance=worker)
        startup._prepare_process()
        assert loaded == expected, queues


def test_the_tasks_live_in_the_app_that_owns_them_under_their_registered_names():
    registered = {task.name for task in vars(diagnostics.tasks).values() if hasattr(task, "delay")}
    assert registered == set(TASKS)


def test_the_worker_package_imports_nothing_from_the_apps_whose_tasks_it_runs():
    """No import circle between packages: diagnostics/tasks imports worker/, never the reverse."""
    for module in WORKER.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not [name for name in names if name.split(".")[0] in {"diagnostics", "ml"}], module.name
