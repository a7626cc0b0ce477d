from django.apps import AppConfig


class DiagnosticsConfig(AppConfig):
    name = "diagnostics"
    verbose_name = "Diagnostics"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Django's own signals (logins) and system checks register by import. What follows a finished
        # study (webhook, PACS results) is not a signal: services.studies.study_finish queues it explicitly.
        from diagnostics import checks, signals  # noqa: F401  (deployment checks, audit receivers)
