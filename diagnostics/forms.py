from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django import forms
from django.db.models import F, QuerySet

from diagnostics.models import TRIAGE_KEY, Feedback, Patient, Prediction, Study
from diagnostics.selectors import study_list_filter


class PatientForm(forms.ModelForm):
    # Required here: only a patient a PACS registers without PatientBirthDate has none (shown as "age unknown").
    birth_date = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}))

    class Meta:
        model = Patient
        fields = ["medical_record_number", "name", "birth_date", "sex"]
        widgets = {"birth_date": forms.DateInput(attrs={"type": "date"})}
        labels = {"medical_record_number": "Medical record number"}


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleImageField(forms.FileField):
    """A file field that accepts several files (Django's documented pattern).

    Empty files pass: the upload services judge every file's content and name each refused file
    with its reason (Django's own "The submitted file is empty." names neither).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        accept = ".jpg,.jpeg,.png,.dcm,image/*,application/dicom"
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": accept}))
        kwargs.setdefault("allow_empty_file", True)
        super().__init__(*args, **kwargs)

    def clean(self, data: Any, initial: Any = None) -> list[Any]:
        single = super().clean
        if isinstance(data, (list, tuple)):
            if not data and self.required:
                raise forms.ValidationError(self.error_messages["required"], code="required")
            return [single(item, initial) for item in data]
        return [single(data, initial)]


class StudyUploadForm(forms.Form):
    accession_number = forms.CharField(max_length=64, required=False)
    modality = forms.ChoiceField(choices=Study.Modality.choices, initial=Study.Modality.CR)
    view_position = forms.ChoiceField(choices=Study.ViewPosition.choices, required=False)
    images = MultipleImageField(
        label="X-ray images (JPEG, PNG or DICOM)", error_messages={"required": "Attach at least one X-ray image."}
    )


class WorklistFilterForm(forms.Form):
    """Filters and order of the worklist, from the query string; an invalid value is ignored."""

    SORTS = {
        # Triage: the most suspicious first; studies still waiting for the AI come last.
        "triage": (TRIAGE_KEY.desc(), "-created_at"),  # as indexed (study_triage_order)
        "newest": ("-created_at",),
        "oldest": ("created_at",),
        "probability": (F("latest_probability").asc(nulls_last=True), "-created_at"),
        "patient": ("patient__name", "-created_at"),
        "patient_desc": ("-patient__name", "-created_at"),
        "status": ("status", "-created_at"),
        "status_desc": ("-status", "-created_at"),
    }
    SORT_CHOICES = [
        ("triage", "Most suspicious first (triage)"),
        ("newest", "Newest first"),
        ("oldest", "Oldest first"),
        ("probability", "Least suspicious first"),
        ("patient", "Patient name A–Z"),
        ("patient_desc", "Patient name Z–A"),
        ("status", "Status A–Z"),
        ("status_desc", "Status Z–A"),
    ]
    SUSPICION_LABELS = {
        "suspected": Prediction.Label.PNEUMONIA,
        "not_suspected": Prediction.Label.NORMAL,
        "awaiting": "awaiting",
    }
    SUSPICION_CHOICES = [
        ("", "Any"),
        ("suspected", "Pneumonia suspected"),
        ("not_suspected", "No pneumonia suspected"),
        ("awaiting", "No AI result yet"),
    ]

    q = forms.CharField(label="Patient name or record number", required=False, max_length=100)
    status = forms.ChoiceField(label="Status", choices=[("", "Any")] + list(Study.Status.choices), required=False)
    suspicion = forms.ChoiceField(label="AI assessment", choices=SUSPICION_CHOICES, required=False)
    # Read: a clinician has recorded a reading of at least one of the study's films (selectors.study_read_exists).
    reading = forms.ChoiceField(
        label="Reading", choices=[("", "All"), ("unread", "Unread"), ("read", "Read")], required=False
    )
    min_probability = forms.IntegerField(
        label="AI suspicion at least (%)",  # the column it filters; a probability only where calibrated
        required=False,
        min_value=0,
        max_value=100,
        widget=forms.NumberInput(attrs={"step": 5, "inputmode": "numeric"}),
    )
    date_from = forms.DateField(label="Uploaded from", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(label="Uploaded until", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    sort = forms.ChoiceField(label="Order", choices=SORT_CHOICES, required=False)

    def value(self, name: str) -> Any:
        """A field's cleaned value, or None when it was absent or invalid (bind the form to request.GET)."""
        self.is_valid()  # cleans once; an invalid field is left out of cleaned_data
        return self.cleaned_data.get(name)

    @property
    def sort_key(self) -> str:
        return self.value("sort") or "triage"

    def filter(self, studies: QuerySet[Study]) -> QuerySet[Study]:
        """Apply the filters (selectors.study_list_filter, as the API does) and the order."""
        minimum = self.value("min_probability")
        studies = study_list_filter(
            studies,
            query=self.value("q") or "",
            status=self.value("status") or "",
            label=self.SUSPICION_LABELS.get(self.value("suspicion") or "", ""),
            min_probability=minimum / 100.0 if minimum is not None else None,
            created_from=self.value("date_from"),
            created_to=self.value("date_to"),
            reading=self.value("reading") or "",
        )
        return studies.order_by(*self.SORTS[self.sort_key], "-pk")

    @property
    def in_use(self) -> int:
        """How many filters (not the order) narrow the list: the worklist's closed 'Filters' says so."""
        return sum(1 for name in self.fields if name != "sort" and self.data.get(name, "") not in ("", None))

    def querystring(self, **overrides: str) -> str:
        """The current filters as a query string (for links that keep them), with overrides."""
        params = {name: self.data.get(name, "") for name in self.fields}
        params.update(overrides)
        return urlencode({key: value for key, value in params.items() if value not in ("", None)})


class FeedbackForm(forms.Form):
    """A clinician's reading of the film: agree with the AI or correct it."""

    confirmed_label = forms.ChoiceField(
        label="Your reading of this film",
        choices=[(Prediction.Label.NORMAL, "Normal"), (Prediction.Label.PNEUMONIA, "Pneumonia")],
        widget=forms.RadioSelect,
    )
    subtype = forms.ChoiceField(
        label="Pneumonia type (optional)",
        choices=[("", "Not specified")] + [c for c in Feedback.Subtype.choices if c[0]],
        required=False,
        widget=forms.RadioSelect,
    )
    comment = forms.CharField(label="Comment (optional)", required=False, widget=forms.Textarea(attrs={"rows": 3}))

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("subtype") and cleaned.get("confirmed_label") != Prediction.Label.PNEUMONIA:
            self.add_error("subtype", "Bacterial or viral applies only when your reading is pneumonia.")
        return cleaned


class DicomInspectForm(forms.Form):
    images = MultipleImageField(label="DICOM files")
