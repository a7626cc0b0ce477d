"""A study's warnings as the API and the webhook give them (selectors.warnings.StudyWarning.as_dict)."""

from __future__ import annotations

from rest_framework import serializers

from diagnostics.selectors.warnings import MISMATCH_FIELDS, WARNING_CODES


class StudyWarningSerializer(serializers.Serializer):
    """A warning the study's AI result must be read with; show `title` and `message` as they are."""

    code = serializers.ChoiceField(
        choices=list(WARNING_CODES.items()),
        help_text="`wrong_patient`: a film's DICOM header disagrees with the patient record (ID, name, birth date, "
        "sex) or the film predates the birth date; `outside_intended_use`: the patient's age when a film was taken, "
        "by the record or by the film's header, is outside the model card's ages; `age_unknown`: neither gives it.",
    )
    title = serializers.CharField(help_text="A few words, capitalised (the worklist shows only these).")
    message = serializers.CharField(help_text="Whole sentences, each starting with a capital letter.")
    image_ids = serializers.ListField(child=serializers.IntegerField(), help_text="The films it concerns.")
    mismatched_fields = serializers.ListField(
        child=serializers.ChoiceField(choices=list(MISMATCH_FIELDS.items())),
        help_text="`wrong_patient`: the header fields that differ from the record; empty otherwise.",
    )
