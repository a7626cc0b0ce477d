from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest

# The admin screens of this app live in three modules; Django loads this one, which loads the others.
from diagnostics import (
    api_token_admin,  # noqa: F401  (API tokens, webhook deliveries)
    lifecycle_admin,  # noqa: F401  (model registry, promotion gate, training runs)
)
from diagnostics.admin_display import dicom_header_table, json_table, latency_text, score_text
from diagnostics.models import (
    AuditEvent,
    CareTeam,
    DicomPeer,
    Image,
    PacsDelivery,
    Patient,
    Prediction,
    Study,
    User,
)


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    fieldsets = (
        *(DjangoUserAdmin.fieldsets or ()),
        ("Portal", {"fields": ("role", "team")}),
        ("Directory", {"fields": ("directory", "directory_ref")}),
    )
    readonly_fields = ("directory", "directory_ref")
    add_fieldsets = (*DjangoUserAdmin.add_fieldsets, ("Portal", {"fields": ("role", "team")}))
    list_display = ("username", "email", "role", "team", "is_active", "is_staff")
    list_filter = ("role", "team", "is_active", "is_staff", "directory")
    actions = ("reset_two_factor",)

    @admin.action(description="Reset two-factor sign-in (a lost phone: they set it up again at next sign-in)")
    def reset_two_factor(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        from diagnostics.integrations.sign_in.two_factor import two_factor_reset

        for user in queryset:
            two_factor_reset(actor=request.user, user=user)  # type: ignore[arg-type]
        self.message_user(request, f"Two-factor sign-in reset for {queryset.count()} account(s).")


@admin.register(CareTeam)
class CareTeamAdmin(admin.ModelAdmin):
    search_fields = ("name",)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Clinical records are written through the services (access rules, audit log), never here:
    the admin shows them; patients and studies are registered and changed on the portal's pages."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Patient)
class PatientAdmin(ReadOnlyAdmin):
    list_display = ("name", "medical_record_number", "team", "birth_date", "created_at")
    list_filter = ("team",)
    search_fields = ("name", "medical_record_number")


@admin.register(Study)
class StudyAdmin(ReadOnlyAdmin):
    list_display = ("id", "patient", "status", "attempts", "created_at")
    list_filter = ("status",)


@admin.register(Image)
class ImageAdmin(ReadOnlyAdmin):
    list_display = ("id", "study", "format", "width", "height", "created_at")
    # The files are stored outside the web root with no URL (views serve them, access-checked): show their
    # stored names, not links, which Django's admin cannot build without MEDIA_URL.
    exclude = ("file", "preview", "window_source", "dicom_metadata")
    readonly_fields = ("stored_as", "derivatives", "dicom_header")
    dicom_header = dicom_header_table

    @admin.display(description="Stored as")
    def stored_as(self, image: Image) -> str:
        return image.file.name

    @admin.display(description="Derivatives (preview, window source)")
    def derivatives(self, image: Image) -> str:
        return ", ".join(field.name for field in (image.preview, image.window_source) if field) or "—"


@admin.register(Prediction)
class PredictionAdmin(ReadOnlyAdmin):
    list_display = ("id", "image", "model_version", "outcome", "probability_text", "label", "created_at")
    list_filter = ("outcome", "role")
    # Display only (admin_display): the score and threshold as the pages write them, the latency in whole
    # ms, the input gate's measurements as a table.
    exclude = ("probability", "threshold", "latency_ms", "gate_measurements")
    readonly_fields = ("probability_text", "threshold_text", "latency_shown", "gate_measurements_table")
    probability_text = score_text("probability", "AI score")
    threshold_text = score_text("threshold", "decision threshold")
    latency_shown = latency_text("latency_ms", "latency")
    gate_measurements_table = json_table("gate_measurements", "input gate measurements")


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):  # append-only: not even the admin edits or deletes an event
    list_display = ("created_at", "actor", "action", "object_type", "object_id", "team")
    exclude = ("detail",)  # shown as a table (admin_display), not as JSON
    readonly_fields = ("detail_table",)
    detail_table = json_table("detail", "detail", empty="— (no detail recorded)")
    list_filter = ("action", "object_type", "team")
    search_fields = ("action", "object_type", "object_id", "actor__username", "detail")
    date_hierarchy = "created_at"
    list_select_related = ("actor", "team")


@admin.register(DicomPeer)
class DicomPeerAdmin(admin.ModelAdmin):
    """The PACSes and modalities allowed to send films (docs/integration.md): configuration, editable. A peer is
    its AE title and the networks it calls from; the receiver rejects any other association."""

    list_display = (
        "ae_title", "allowed_networks", "max_associations", "team", "service_user", "host", "port",
        "results_ae_title", "enabled",
    )  # fmt: skip
    list_filter = ("enabled", "team")
    search_fields = ("ae_title", "host", "allowed_networks")


@admin.register(PacsDelivery)
class PacsDeliveryAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "study", "peer", "kind", "status", "attempts", "last_error")
    list_filter = ("status", "kind", "peer")
