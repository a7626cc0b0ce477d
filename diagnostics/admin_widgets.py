"""Admin form widgets that name themselves for assistive technology.

Django's AdminSplitDateTime (every DateTimeField in the admin: Celery beat's start time, expiry and
clocked time, and any of ours) renders two text boxes with the words "Date:" and "Time:" beside them as
plain text and no label element for either: a screen reader announces two unnamed edit boxes, and axe
reports it (WCAG 4.1.2, rule "label"). The admin site (diagnostics/admin_audit.AuditedAdminSite) gives
every ModelAdmin registered on it `LabelledDateTimeAdminMixin`, which names each box after its field:
"Start datetime: date", "Start datetime: time".
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.widgets import AdminSplitDateTime
from django.db import models
from django.http import HttpRequest
from django.utils.text import capfirst
from django.utils.translation import gettext


def label_split_datetime(widget: AdminSplitDateTime, label: str) -> None:
    """Give the widget's date and time boxes an accessible name each (aria-label)."""
    for box, part in zip(widget.widgets, (gettext("date"), gettext("time")), strict=True):
        box.attrs["aria-label"] = f"{label}: {part}"


class LabelledDateTimeAdminMixin:
    """Names the two boxes of every split date/time field of the admin's forms after the field."""

    def formfield_for_dbfield(
        self, db_field: models.Field[Any, Any], request: HttpRequest | None, **kwargs: Any
    ) -> Any:
        formfield = super().formfield_for_dbfield(db_field, request, **kwargs)  # type: ignore[misc]
        if formfield is not None and isinstance(formfield.widget, AdminSplitDateTime):
            label_split_datetime(formfield.widget, capfirst(str(formfield.label or db_field.verbose_name)))
        return formfield


def labelled_admin_class(admin_class: type[admin.ModelAdmin]) -> type[admin.ModelAdmin]:
    if issubclass(admin_class, LabelledDateTimeAdminMixin):
        return admin_class
    return type(admin_class.__name__, (LabelledDateTimeAdminMixin, admin_class), {"__module__": admin_class.__module__})
