"""Filtering and ordering of the API's lists (django-filter), applied to access-checked querysets.

Each query parameter is one form field of its own, so an invalid value is reported under the name the
client sent (`created_after`, not a range's shared name). A parameter is given once: a repeated one is
refused, except `ordering`, which takes several fields either comma-separated or repeated.
"""

from __future__ import annotations

from typing import Any

import django_filters
from django import forms
from django.db.models import QuerySet
from django_filters.widgets import BaseCSVWidget
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

from diagnostics.models import ApiToken, ModelVersion, Patient, Prediction, Study, TrainingRun
from diagnostics.selectors import study_list_filter


class OrderingWidget(BaseCSVWidget, forms.TextInput):
    """`ordering=a,b` and `ordering=a&ordering=b` (what generated clients send) both mean a, then b."""

    def value_from_datadict(self, data: Any, files: Any, name: str) -> list[str] | None:
        if not hasattr(data, "getlist"):
            return super().value_from_datadict(data, files, name)
        values = data.getlist(name)
        if not values:
            return None
        return [part for value in values if value for part in value.split(",")]


class OrderingFilter(django_filters.OrderingFilter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("widget", OrderingWidget)
        kwargs.setdefault(
            "help_text",
            "One or more fields, the first sorting first; `-` before a field for descending. "
            "Comma-separated (`ordering=-created_at,id`) or repeated (`ordering=-created_at&ordering=id`).",
        )
        super().__init__(*args, **kwargs)


@extend_schema_field(OpenApiTypes.INT)
class IdFilter(django_filters.NumberFilter):
    """A record id: an integer (a NumberFilter alone takes "1.5" and is typed `number`)."""

    field_class = forms.IntegerField


def created_on_or_after() -> django_filters.DateFilter:
    # created_at__date: the day in the portal's time zone, as the worklist page filters.
    return django_filters.DateFilter(
        field_name="created_at", lookup_expr="date__gte", help_text="Created on or after this date (inclusive)."
    )


def created_on_or_before() -> django_filters.DateFilter:
    return django_filters.DateFilter(
        field_name="created_at", lookup_expr="date__lte", help_text="Created on or before this date (inclusive)."
    )


class OnceForm(forms.Form):
    """Refuses a repeated parameter that takes one value: keeping one of them silently would mislead."""

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if hasattr(self.data, "getlist"):
            for name, field in self.fields.items():
                if not isinstance(field.widget, OrderingWidget) and len(self.data.getlist(name)) > 1:
                    self.add_error(name, "Give this parameter once.")
        return cleaned or {}


class PortalFilterSet(django_filters.FilterSet):
    class Meta:
        form = OnceForm


class PatientFilter(PortalFilterSet):
    medical_record_number = django_filters.CharFilter(help_text="Exact medical record number.")
    name = django_filters.CharFilter(lookup_expr="icontains", help_text="Part of the name, any case.")
    birth_date_after = django_filters.DateFilter(
        field_name="birth_date", lookup_expr="gte", help_text="Born on or after this date."
    )
    birth_date_before = django_filters.DateFilter(
        field_name="birth_date", lookup_expr="lte", help_text="Born on or before this date."
    )
    created_after = created_on_or_after()
    created_before = created_on_or_before()
    ordering = OrderingFilter(fields=("name", "birth_date", "created_at", "id"))

    class Meta(PortalFilterSet.Meta):
        model = Patient
        fields = ["medical_record_number", "name"]


class StudyFilter(PortalFilterSet):
    patient = IdFilter(field_name="patient_id", help_text="Studies of this patient (id).")
    status = django_filters.ChoiceFilter(choices=Study.Status.choices)
    created_after = created_on_or_after()
    created_before = created_on_or_before()
    label = django_filters.ChoiceFilter(
        field_name="latest_label",
        choices=Prediction.Label.choices,
        help_text="The study's current AI label (suspected when any of its films is).",
    )
    model_version = IdFilter(
        method="filter_model_version", help_text="Studies with an assessment by this model version (id)."
    )
    accession_number = django_filters.CharFilter()
    reading = django_filters.ChoiceFilter(
        method="filter_reading",
        choices=[("read", "read"), ("unread", "unread")],
        help_text="`read`: a clinician's reading (feedback, from the pages or this API) is recorded on an "
        "assessment of at least one of the study's films, or an acknowledgement ('seen: no AI result') of a "
        "refused film or of the study itself (its analysis failed); `unread`: none is.",
    )
    ordering = OrderingFilter(
        fields=(
            ("created_at", "created_at"),
            ("status_changed_at", "status_changed_at"),
            ("latest_probability", "probability"),
            ("id", "id"),
        )
    )

    class Meta(PortalFilterSet.Meta):
        model = Study
        fields = ["patient", "status", "accession_number"]

    def filter_queryset(self, queryset: QuerySet[Study]) -> QuerySet[Study]:
        """The fields above describe the query (and the schema); the filtering itself is
        selectors.study_list_filter, the one the worklist page applies."""
        data = self.form.cleaned_data
        studies = study_list_filter(
            queryset,
            patient_id=data.get("patient"),
            status=data.get("status") or "",
            label=data.get("label") or "",
            created_from=data.get("created_after"),
            created_to=data.get("created_before"),
            accession_number=data.get("accession_number") or "",
            model_version_id=data.get("model_version"),
            reading=data.get("reading") or "",
        )
        return self.filters["ordering"].filter(studies, data.get("ordering"))

    def filter_model_version(self, queryset: QuerySet[Study], name: str, value: int) -> QuerySet[Study]:
        return queryset  # applied by filter_queryset (study_list_filter); declared for the schema

    def filter_reading(self, queryset: QuerySet[Study], name: str, value: str) -> QuerySet[Study]:
        return queryset  # applied by filter_queryset (study_list_filter); declared for the schema


class PredictionFilter(PortalFilterSet):
    patient = IdFilter(field_name="image__study__patient_id", help_text="Assessments of this patient's films (id).")
    study = IdFilter(field_name="image__study_id", help_text="Assessments of this study's films (id).")
    image = IdFilter(field_name="image_id", help_text="Assessments of this film (id).")
    label = django_filters.ChoiceFilter(choices=Prediction.Label.choices)
    model_version = IdFilter(field_name="model_version_id", help_text="Assessments by this model version (id).")
    created_after = created_on_or_after()
    created_before = created_on_or_before()
    ordering = OrderingFilter(fields=("created_at", "probability", "id"))

    class Meta(PortalFilterSet.Meta):
        model = Prediction
        fields = ["label"]


class ModelVersionFilter(PortalFilterSet):
    status = django_filters.ChoiceFilter(choices=ModelVersion.Status.choices)
    architecture = django_filters.CharFilter()
    ordering = OrderingFilter(fields=("created_at", "activated_at", "name", "id"))

    class Meta(PortalFilterSet.Meta):
        model = ModelVersion
        fields = ["status", "architecture"]


class TrainingRunFilter(PortalFilterSet):
    status = django_filters.ChoiceFilter(choices=TrainingRun.Status.choices)
    created_after = created_on_or_after()
    created_before = created_on_or_before()
    ordering = OrderingFilter(fields=("created_at", "id"))

    class Meta(PortalFilterSet.Meta):
        model = TrainingRun
        fields = ["status"]


class ApiTokenFilter(PortalFilterSet):
    team = IdFilter(field_name="team_id", help_text="Tokens of this care team (id).")
    revoked = django_filters.BooleanFilter(field_name="revoked_at", lookup_expr="isnull", exclude=True)
    ordering = OrderingFilter(fields=("created_at", "last_used_at", "name", "id"))

    class Meta(PortalFilterSet.Meta):
        model = ApiToken
        fields = ["team"]
