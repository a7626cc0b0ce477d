from __future__ import annotations

from typing import Any

from django import forms

from diagnostics.models import Patient, Study


class PatientForm(forms.ModelForm):
    class Meta:
        model = Patient
        fields = ["medical_record_number", "name", "birth_date", "sex"]
        widgets = {"birth_date": forms.DateInput(attrs={"type": "date"})}
        labels = {"medical_record_number": "Medical record number"}


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleImageField(forms.FileField):
    """A file field that accepts several files (Django's documented pattern)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        accept = ".jpg,.jpeg,.png,.dcm,image/*,application/dicom"
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": accept}))
        super().__init__(*args, **kwargs)

    def clean(self, data: Any, initial: Any = None) -> list[Any]:
        single = super().clean
        if isinstance(data, (list, tuple)):
            return [single(item, initial) for item in data]
        return [single(data, initial)]


class StudyUploadForm(forms.Form):
    accession_number = forms.CharField(max_length=64, required=False)
    modality = forms.ChoiceField(choices=Study.Modality.choices, initial=Study.Modality.CR)
    view_position = forms.ChoiceField(choices=Study.ViewPosition.choices, required=False)
    images = MultipleImageField(label="X-ray images (JPEG, PNG or DICOM)")
