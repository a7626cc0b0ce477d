"""Every change made in the Django admin is an event in the audit log (docs/operations.md, "Audit log").

The admin site is `AuditedAdminSite` (Django's `default_site`, set by `apps.PortalAdminConfig`): whatever
ModelAdmin anyone registers on it (this app's, django.contrib.auth's groups, Celery beat's schedules,
Axes' lockouts) is given `AuditedModelAdminMixin`, so no screen can be added that changes rows
without an audit event. The mixin hooks the points every admin write passes through:

- `log_addition` / `log_change` (the add and change forms, list_editable, the password form): the
  object's fields before (read from the database when the admin loads or saves it) and after, as
  `{field: {"from": ..., "to": ...}}`, with the inline objects added, changed and deleted;
- `log_deletions` (the delete page and the bulk "delete selected" action): each object's fields;
- every admin action (`get_actions`): which action, on which objects, and what it changed in them,
  in one transaction with the action itself.

Secrets (password hashes, token digests, webhook secrets, private keys) are never written: a change
to one is recorded as changed, with its values "[redacted]".
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.db import models, transaction
from django.db.models.fields.files import FieldFile
from django.http import HttpRequest

from diagnostics.admin_widgets import labelled_admin_class
from diagnostics.services.audit import audit_record

REDACTED = "[redacted]"
# A field whose name contains one of these holds a secret or what would let someone test guesses of one.
SECRET_NAME_PARTS = ("password", "secret", "sha256", "token", "private", "key")
# Values longer than this are cut (a JSON manifest, a log): the event says what changed, not a copy of it.
MAX_VALUE_CHARS = 500
MAX_ACTION_OBJECTS = 500  # an action on more objects records their ids and changes up to this many


def is_secret_field(name: str) -> bool:
    lowered = name.lower()
    return any(part in lowered for part in SECRET_NAME_PARTS)


def _plain(value: Any) -> Any:
    """A field's value as JSON the audit log can hold."""
    if value is None or isinstance(value, (bool, int, str)):
        return value[:MAX_VALUE_CHARS] if isinstance(value, str) else value
    if isinstance(value, float):
        return value
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID, dt.timedelta)):
        return str(value)
    if isinstance(value, FieldFile):
        return value.name or ""
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        text = repr(value)
        return value if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "…"
    return str(value)[:MAX_VALUE_CHARS]


def snapshot(obj: models.Model) -> dict[str, Any]:
    """The object's stored fields (foreign keys as ids, many-to-many as sorted ids), secrets redacted."""
    values: dict[str, Any] = {}
    for field in obj._meta.concrete_fields:
        values[field.name] = REDACTED if is_secret_field(field.name) else _plain(field.value_from_object(obj))
    if obj.pk is not None:
        for m2m in obj._meta.many_to_many:
            values[m2m.name] = sorted(getattr(obj, m2m.name).values_list("pk", flat=True))
    return values


def stored_snapshot(model: type[models.Model], pk: Any) -> dict[str, Any] | None:
    fresh = model._base_manager.filter(pk=pk).first()
    return snapshot(fresh) if fresh is not None else None


def changes_between(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{field: {"from", "to"}} for every field whose value differs (a secret: both "[redacted]")."""
    changed: dict[str, dict[str, Any]] = {}
    for name in sorted(set(before) | set(after)):
        if before.get(name) != after.get(name):
            changed[name] = {"from": before.get(name), "to": after.get(name)}
    return changed


def _secret_changes(obj: models.Model, before_obj: models.Model | None) -> dict[str, dict[str, Any]]:
    """Secrets are redacted in snapshots, so compare them here and report only that they changed."""
    if before_obj is None:
        return {}
    return {
        field.name: {"from": REDACTED, "to": REDACTED}
        for field in obj._meta.concrete_fields
        if is_secret_field(field.name) and field.value_from_object(obj) != field.value_from_object(before_obj)
    }


def _team_of(obj: models.Model) -> int | None:
    team_id = getattr(obj, "team_id", None)
    return team_id if isinstance(team_id, int) else None


def _state(request: HttpRequest) -> dict[str, Any]:
    state = getattr(request, "_admin_audit", None)
    if state is None:
        state = {"before": {}, "inlines": []}
        request._admin_audit = state  # type: ignore[attr-defined]
    return state


def _key(obj: models.Model) -> tuple[str, str]:
    return obj._meta.label, str(obj.pk)


def _admin_log_id(entry: Any) -> int | None:
    if isinstance(entry, list):
        entry = entry[0] if entry else None
    return getattr(entry, "pk", None)


class AuditedModelAdminMixin:
    """Given to every ModelAdmin of the site: each change it makes becomes an audit event."""

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Any:
        obj = super().get_object(request, object_id, from_field)  # type: ignore[misc]
        if obj is not None:
            self._remember_before(request, obj, fetch=False)
        return obj

    def _remember_before(self, request: HttpRequest, obj: models.Model, *, fetch: bool) -> None:
        before = _state(request)["before"]
        key = _key(obj)
        if key in before:
            return
        stored = obj.__class__._base_manager.filter(pk=obj.pk).first() if fetch else obj
        if stored is not None:
            # A copy: the form later writes its values into the object the admin loaded.
            before[key] = (snapshot(stored), _copy_of(stored))

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if change and obj.pk is not None:
            self._remember_before(request, obj, fetch=True)  # list_editable saves without get_object
        super().save_model(request, obj, form, change)  # type: ignore[misc]

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        model = formset.model
        known = [f.instance.pk for f in formset.initial_forms if f.instance.pk is not None]
        before = {str(o.pk): snapshot(o) for o in model._base_manager.filter(pk__in=known)}
        deleted = [str(f.instance.pk) for f in formset.deleted_forms if f.instance.pk is not None]
        super().save_formset(request, form, formset, change)  # type: ignore[misc]
        label = model._meta.label
        records = _state(request)["inlines"]
        for obj in formset.new_objects:
            records.append({"model": label, "id": str(obj.pk), "added": snapshot(obj)})
        for obj, _fields in formset.changed_objects:
            changed = changes_between(before.get(str(obj.pk), {}), snapshot(obj))
            records.append({"model": label, "id": str(obj.pk), "changed": changed})
        for pk in deleted:
            records.append({"model": label, "id": pk, "deleted": before.get(pk, {})})

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        entry = super().log_addition(request, obj, message)  # type: ignore[misc]
        state = _state(request)
        detail = {"fields": snapshot(obj), "admin_log": _admin_log_id(entry)}
        if state["inlines"]:
            detail["inlines"] = state["inlines"]
        audit_record(action="admin.added", actor=request.user, target=obj, team_id=_team_of(obj), detail=detail)
        state["inlines"] = []
        return entry

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        entry = super().log_change(request, obj, message)  # type: ignore[misc]
        state = _state(request)
        remembered = state["before"].pop(_key(obj), None)
        after_obj = obj.__class__._base_manager.filter(pk=obj.pk).first() or obj
        after = snapshot(after_obj)
        before, before_obj = remembered if remembered is not None else (None, None)
        detail: dict[str, Any] = {"admin_log": _admin_log_id(entry)}
        if before is not None:
            changes = changes_between(before, after)
            changes.update(_secret_changes(after_obj, before_obj))
            detail["changes"] = changes
        else:  # a custom admin view that changed the object without loading it through the admin
            detail["changes_unknown"] = True
            detail["fields"] = after
        detail["message"] = _plain(_message_text(message))
        if state["inlines"]:
            detail["inlines"] = state["inlines"]
        state["inlines"] = []
        audit_record(action="admin.changed", actor=request.user, target=obj, team_id=_team_of(obj), detail=detail)
        return entry

    def log_deletions(self, request: HttpRequest, queryset: Any) -> Any:
        # Called before the objects are deleted, inside the delete page's (or the action's) transaction.
        for obj in queryset:
            audit_record(
                action="admin.deleted",
                actor=request.user,
                target=obj,
                # The team itself may be what is deleted: an event must not point at a vanishing row.
                team_id=_team_of(obj),
                detail={"repr": str(obj)[:MAX_VALUE_CHARS], "fields": snapshot(obj)},
            )
        return super().log_deletions(request, queryset)  # type: ignore[misc]

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)  # type: ignore[misc]
        return {
            name: (_audited_action(func, name), action_name, description)
            for name, (func, action_name, description) in actions.items()
        }


def _copy_of(obj: models.Model) -> models.Model:
    clone = obj.__class__.__new__(obj.__class__)
    clone.__dict__.update(obj.__dict__)
    return clone


def _message_text(message: Any) -> str:
    if isinstance(message, list):
        from django.contrib.admin.models import LogEntry

        return LogEntry(change_message=json.dumps(message)).get_change_message()
    return str(message)


def _audited_action(func: Callable[..., Any], name: str) -> Callable[..., Any]:
    """Run an admin action in one transaction with an event saying what it changed in the objects."""
    if name == "delete_selected":
        return func  # log_deletions records each object it deletes, with its fields

    def run(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: Any) -> Any:
        model = queryset.model
        with transaction.atomic():
            objects = list(queryset[: MAX_ACTION_OBJECTS + 1])
            ids = [str(obj.pk) for obj in objects]
            before = {str(obj.pk): snapshot(obj) for obj in objects[:MAX_ACTION_OBJECTS]}
            response = func(modeladmin, request, queryset)
            changes = {}
            for obj in model._base_manager.filter(pk__in=list(before)):
                changed = changes_between(before[str(obj.pk)], snapshot(obj))
                if changed:
                    changes[str(obj.pk)] = changed
            gone = sorted(set(before) - {str(pk) for pk in model._base_manager.filter(pk__in=list(before))
                                         .values_list("pk", flat=True)})  # fmt: skip
            if response is None or changes or gone:  # done (not an intermediate page), or something changed
                audit_record(
                    action="admin.action",
                    actor=request.user,
                    detail={
                        "action": name,
                        "model": model._meta.label,
                        "objects": ids[:MAX_ACTION_OBJECTS],
                        "more_objects": len(ids) > MAX_ACTION_OBJECTS,
                        "changes": changes,
                        "deleted": gone,
                    },
                )
        return response

    run.__name__ = getattr(func, "__name__", name)
    for attribute in ("short_description", "allowed_permissions"):
        if hasattr(func, attribute):
            setattr(run, attribute, getattr(func, attribute))
    return run


def audited_admin_class(admin_class: type[admin.ModelAdmin]) -> type[admin.ModelAdmin]:
    if issubclass(admin_class, AuditedModelAdminMixin):
        return admin_class
    return type(admin_class.__name__, (AuditedModelAdminMixin, admin_class), {"__module__": admin_class.__module__})


class AuditedAdminSite(admin.AdminSite):
    """Django's admin site, but every ModelAdmin registered on it audits the changes it makes (and names
    its split date/time boxes for screen readers: diagnostics/admin_widgets.py)."""

    def register(self, model_or_iterable: Any, admin_class: Any = None, **options: Any) -> None:
        admin_class = labelled_admin_class(admin_class or admin.ModelAdmin)
        super().register(model_or_iterable, audited_admin_class(admin_class), **options)
