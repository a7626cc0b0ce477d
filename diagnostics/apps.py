from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class PortalAdminConfig(admin_apps.AdminConfig):
    """`django.contrib.admin` whose `admin.site` audits every change made through it (diagnostics/admin_audit.py).

    INSTALLED_APPS names this instead of "django.contrib.admin"."""

    default = False  # "diagnostics" in INSTALLED_APPS still means DiagnosticsConfig
    default_site = "diagnostics.admin_audit.AuditedAdminSite"


class DiagnosticsConfig(AppConfig):
    name = "diagnostics"
    verbose_name = "Diagnostics"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Django's own signals (logins) and system checks register by import. What follows a finished
        # study (webhook, PACS results) is not a signal: services.studies.study_finish queues it explicitly.
        from diagnostics import checks, signals  # noqa: F401  (deployment checks, audit receivers)
