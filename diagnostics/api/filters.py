"""Filtering and ordering of the API's lists (django-filter), applied to access-checked querysets."""

from __future__ import annotations

import django_filters
from django.db.models import QuerySet

from diagnostics.models import ApiToken, ModelVersion, Patient, Prediction, Study, TrainingRun
from diagnostics.selectors import study_list_filter


class PatientFilter(django_filters.FilterSet):
    medical_record_number = django_filters.CharFilter(help_text="Exact medical record number.")
    name = django_filters.CharFilter(lookup_expr="icontains", help_text="Part of the name, any case.")
    birth_date = django_filters.DateFromToRangeFilter(help_text="birth_date_after / birth_date_before (inclusive).")
    created = django_filters.DateFromToRangeFilter(
        field_name="created_at", help_text="created_after / created_before: dates, inclusive."
    )
    ordering = django_filters.OrderingFilter(fields=("name", "birth_date", "created_at", "id"))

    class Meta:
        model = Patient
        fields = ["medical_record_number", "name"]


class StudyFilter(django_filters.FilterSet):
    patient = django_filters.NumberFilter(field_name="patient_id", help_text="Studies of this patient.")
    status = django_filters.ChoiceFilter(choices=Study.Status.choices)
    created = django_filters.DateFromToRangeFilter(
        field_name="created_at", help_text="created_after / created_before: dates, inclusive."
    )
    label = django_filters.ChoiceFilter(
        field_name="latest_label",
        choices=Prediction.Label.choices,
        help_text="The study's current AI label (suspected when any of its films is).",
    )
    model_version = django_filters.NumberFilter(
        method="filter_model_version", help_text="Studies with an assessment by this model version (id)."
    )
    accession_number = django_filters.CharFilter()
    ordering = django_filters.OrderingFilter(
        fields=(
            ("created_at", "created_at"),
            ("status_changed_at", "status_changed_at"),
            ("latest_probability", "probability"),
            ("id", "id"),
        )
    )

    class Meta:
        model = Study
        fields = ["patient", "status", "accession_number"]

    def filter_queryset(self, queryset: QuerySet[Study]) -> QuerySet[Study]:
        """The fields above describe the query (and the schema); the filtering itself is
        selectors.study_list_filter, the one the worklist page applies."""
        data = self.form.cleaned_data
        created = data.get("created")
        studies = study_list_filter(
            queryset,
            patient_id=_int_or_none(data.get("patient")),
            status=data.get("status") or "",
            label=data.get("label") or "",
            created_from=created.start if created else None,
            created_to=created.stop if created else None,
            accession_number=data.get("accession_number") or "",
            model_version_id=_int_or_none(data.get("model_version")),
        )
        return self.filters["ordering"].filter(studies, data.get("ordering"))

    def filter_model_version(self, queryset: QuerySet[Study], name: str, value: int) -> QuerySet[Study]:
        return queryset  # applied by filter_queryset (study_list_filter); declared for the schema


def _int_or_none(value: object) -> int | None:
    return int(value) if value is not None else None  # type: ignore[call-overload]


class PredictionFilter(django_filters.FilterSet):
    patient = django_filters.NumberFilter(field_name="image__study__patient_id")
    study = django_filters.NumberFilter(field_name="image__study_id")
    image = django_filters.NumberFilter(field_name="image_id")
    label = django_filters.ChoiceFilter(choices=Prediction.Label.choices)
    model_version = django_filters.NumberFilter(field_name="model_version_id")
    created = django_filters.DateFromToRangeFilter(
        field_name="created_at", help_text="created_after / created_before: dates, inclusive."
    )
    ordering = django_filters.OrderingFilter(fields=("created_at", "probability", "id"))

    class Meta:
        model = Prediction
        fields = ["label"]


class ModelVersionFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=ModelVersion.Status.choices)
    architecture = django_filters.CharFilter()
    ordering = django_filters.OrderingFilter(fields=("created_at", "activated_at", "name", "id"))

    class Meta:
        model = ModelVersion
        fields = ["status", "architecture"]


class TrainingRunFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=TrainingRun.Status.choices)
    created = django_filters.DateFromToRangeFilter(field_name="created_at")
    ordering = django_filters.OrderingFilter(fields=("created_at", "id"))

    class Meta:
        model = TrainingRun
        fields = ["status"]


class ApiTokenFilter(django_filters.FilterSet):
    team = django_filters.NumberFilter(field_name="team_id")
    revoked = django_filters.BooleanFilter(field_name="revoked_at", lookup_expr="isnull", exclude=True)
    ordering = django_filters.OrderingFilter(fields=("created_at", "last_used_at", "name", "id"))

    class Meta:
        model = ApiToken
        fields = ["team"]
