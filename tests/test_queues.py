"""Every task has its queue and options in worker/queues.py, and only inference workers preload a model."""

from __future__ import annotations

from types import SimpleNamespace

from worker import celery_app
from worker.queues import INFERENCE, MAINTENANCE, ROUTES, TASKS, TRAINING
from worker.tasks import inference as inference_tasks


def test_every_registered_task_is_routed_by_the_one_table():
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
        monkeypatch.setattr(inference_tasks, "_consumed_queues", set())
        worker = SimpleNamespace(app=SimpleNamespace(amqp=SimpleNamespace(queues=SimpleNamespace(consume_from=queues))))
        inference_tasks._remember_consumed_queues(sender="w", instance=worker)
        inference_tasks._load_model_once_per_process()
        assert loaded == expected, queues
