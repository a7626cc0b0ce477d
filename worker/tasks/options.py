"""Task options shared by tasks that only touch the database and files."""

from django.db import DatabaseError, InterfaceError

# Retry only what a retry can fix: the database or its connection going away.
RETRY_ON_DATABASE_ERRORS = {
    "autoretry_for": (DatabaseError, InterfaceError),
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "max_retries": 5,
}
