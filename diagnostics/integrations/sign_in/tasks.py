"""The directory sync beat runs on the maintenance queue (worker/queues.py)."""

from __future__ import annotations

from celery import shared_task

from worker.queues import options


@shared_task(**options("worker.tasks.sync_directory_accounts"))
def sync_directory_accounts() -> dict[str, int]:
    from .ldap import ldap_accounts_sync

    return ldap_accounts_sync()
