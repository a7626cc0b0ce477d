from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

# The admin screens of this app live in three modules; Django loads this one, which loads the others.
from diagnostics import (
    api_token_admin,  # noqa: F401  (API tokens, webhook deliveries)
    lifecycle_admin,  # noqa: F401  (model registry, promotion gate, training runs)
)
from diagnostics.models import AuditEvent, CareTeam, Image, Patient, Prediction, Study, User


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    fieldsets = (*(DjangoUserAdmin.fieldsets or ()), ("Portal", {"fields": ("role", "team")}))
    add_fieldsets = (*DjangoUserAdmin.add_fieldsets, ("Portal", {"fields": ("role", "team")}))
    list_display = ("username", "email", "role", "team", "is_active", "is_staff")
    list_filter = ("role", "team", "is_active", "is_staff")


@admin.register(CareTeam)
class CareTeamAdmin(admin.ModelAdmin):
    search_fields = ("name",)


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin):
    list_display = ("name", "medical_record_number", "team", "birth_date", "created_at")
    list_filter = ("team",)
    search_fields = ("name", "medical_record_number")


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    list_display = ("id", "patient", "status", "attempts", "created_at")
    list_filter = ("status",)
    readonly_fields = ("status", "failure_reason", "attempts", "status_changed_at")


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ("id", "study", "format", "width", "height", "created_at")
    readonly_fields = ("file", "sha256", "width", "height", "format", "size_bytes", "dicom_metadata")


@admin.register(Prediction)
class PredictionAdmin(admin.ModelAdmin):
    list_display = ("id", "image", "model_version", "probability", "label", "created_at")

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ("created_at", "actor", "action", "object_type", "object_id", "team")
    list_filter = ("action", "object_type", "team")
    search_fields = ("action", "object_type", "object_id", "actor__username", "detail")
    date_hierarchy = "created_at"
    list_select_related = ("actor", "team")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
