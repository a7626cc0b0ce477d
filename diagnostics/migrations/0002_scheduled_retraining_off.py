"""An admin-editable weekly retraining schedule, created disabled (retraining is opt-in)."""

import json

from django.db import migrations

TASK_NAME = "Weekly retraining (off by default)"


def create_schedule(apps, schema_editor):
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    crontab, _ = CrontabSchedule.objects.get_or_create(
        minute="0", hour="2", day_of_week="0", day_of_month="*", month_of_year="*", timezone="UTC"
    )
    PeriodicTask.objects.get_or_create(
        name=TASK_NAME,
        defaults={
            "task": "worker.tasks.scheduled_retraining",
            "crontab": crontab,
            "kwargs": json.dumps({"architecture": "cnn", "config": {"epochs": 10, "data_source": "dataset+feedback"}}),
            "queue": "training",
            "enabled": False,
            "expire_seconds": 3600,
            "description": "Retrains on the configured dataset plus clinician-confirmed labels. Enable it here.",
        },
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("diagnostics", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
