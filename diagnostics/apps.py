from django.apps import AppConfig


class DiagnosticsConfig(AppConfig):
    name = "diagnostics"
    verbose_name = "Diagnostics"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from diagnostics import checks, signals  # noqa: F401  (deployment checks, audit receivers)
        from diagnostics.api import admin, receivers  # noqa: F401  (API token admin, webhooks on finished studies)
        from diagnostics.services import heatmaps  # noqa: F401  (heatmaps for finished studies)
