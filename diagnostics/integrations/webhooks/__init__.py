"""Webhooks to API clients: signed notifications, retried with backoff and recorded (docs/api.md)."""
