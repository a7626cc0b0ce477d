"""API tokens in the Django admin: issue (the key is shown once), list, revoke.

Imported by diagnostics/admin.py, which Django's admin loads. Writes go through the api_tokens
services, so the admin and the API issue and revoke tokens the same way.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.exceptions import NotRegistered
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from diagnostics.admin_display import json_table
from diagnostics.models import ApiToken, User, WebhookDelivery
from diagnostics.services.api_tokens import api_token_check_account, api_token_issue, api_token_revoke

# DRF's legacy authtoken keys do not authenticate here (ApiTokenAuthentication replaced them): hide them.
try:
    from rest_framework.authtoken.models import TokenProxy

    admin.site.unregister(TokenProxy)
except (ImportError, NotRegistered):
    pass


class ApiTokenIssueForm(forms.ModelForm):
    user = forms.ModelChoiceField(
        queryset=User.objects.filter(role=User.Role.API_CLIENT, is_active=True),
        required=False,
        help_text="An existing API client account of the team; leave empty to create one for this token.",
    )

    class Meta:
        model = ApiToken
        fields = ["name", "team", "user"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("user") is not None and data.get("team") is not None:
            try:
                api_token_check_account(team=data["team"], user=data["user"])
            except ValidationError as error:
                self.add_error("user", " ".join(error.messages))
        return data


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "team", "user", "created_by", "created_at", "last_used_at", "revoked_at")
    list_filter = ("team", ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("name", "prefix", "user__username")
    actions = ["revoke"]
    readonly_fields = (
        "name",
        "prefix",
        "team",
        "user",
        "created_by",
        "created_at",
        "last_used_at",
        "revoked_at",
    )

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = ApiTokenIssueForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.readonly_fields if obj is not None else ()

    def has_add_permission(self, request: HttpRequest) -> bool:
        return isinstance(request.user, User) and request.user.is_portal_admin

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Viewable, never editable: a token is revoked (action) and a new one issued instead.
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return isinstance(request.user, User) and request.user.is_portal_admin

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        assert isinstance(request.user, User) and not change
        data = form.cleaned_data
        try:
            issued = api_token_issue(actor=request.user, name=data["name"], team=data["team"], user=data["user"])
        except (ValidationError, PermissionDenied) as error:
            # ModelAdmin has validated the form already; report the service's refusal and store nothing.
            raise PermissionDenied(" ".join(getattr(error, "messages", [str(error)]))) from None
        obj.pk = issued.token.pk
        messages.warning(
            request,
            f"API token issued. Copy the key now, it is not shown again: {issued.key} — "
            f"webhook signing secret: {issued.token.webhook_secret}",
        )

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        assert isinstance(request.user, User)
        for token in queryset:
            api_token_revoke(actor=request.user, token=token)
        messages.success(request, f"Revoked {queryset.count()} token(s).")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    """Read-only: operators see which notifications were delivered, retried or given up."""

    list_display = ("id", "study", "event", "url", "status", "attempts", "last_response_code", "created_at")
    list_filter = ("status", "event")
    search_fields = ("url", "study__id")
    exclude = ("payload",)
    payload_table = json_table("payload", "payload")
    readonly_fields = (
        "study",
        "url",
        "event",
        "payload_table",  # a table, not JSON (admin_display)
        "status",
        "attempts",
        "last_response_code",
        "last_error",
        "created_at",
        "delivered_at",
    )

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return isinstance(request.user, User) and request.user.is_portal_admin

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
