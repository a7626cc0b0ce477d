"""How the admin shows stored values: every JSON field as a table (formatting.manifest_tables.value_html),
a score or threshold as a percentage and a latency in whole ms (formatting.numbers), never the raw JSON or
a float's seventeen digits. Each factory makes a ModelAdmin method (assign it in the class body, name it in
`readonly_fields` or `list_display` in place of the raw field, which the admin excludes): display only,
nothing here writes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.db.models import Model
from django.utils.safestring import SafeString

from diagnostics.formatting import numbers
from diagnostics.formatting.manifest_tables import value_html
from diagnostics.formatting.words import dicom_facts

Display = Callable[[Any, Any], Any]  # a ModelAdmin method: (self, obj)


def json_table(field: str, description: str, *, empty: str = "—") -> Display:
    """A JSON field as a key/value table (nested where the JSON nests); `empty` when it holds nothing."""

    @admin.display(description=description)
    def show(admin_: Any, obj: Model) -> SafeString | str:
        value = getattr(obj, field)
        return value_html(value) if value not in (None, {}, []) else empty

    show.__name__ = f"{field}_table"
    return show


def _number_text(field: str, description: str, write: Callable[[Any], str]) -> Display:
    """A number field as `write` writes it, sorted by the field."""

    @admin.display(description=description, ordering=field)
    def show(admin_: Any, obj: Model) -> str:
        return write(getattr(obj, field))

    show.__name__ = f"{field}_text"
    return show


def score_text(field: str, description: str) -> Display:
    """A model's score or threshold (0–1) as numbers.score_percent writes it ('51.9 %', '> 99.9 %')."""
    return _number_text(field, description, numbers.score_percent)


def latency_text(field: str, description: str) -> Display:
    """Milliseconds, whole ('4 ms')."""
    return _number_text(field, description, numbers.latency_ms)


def metric_text(value: Any) -> str:
    """An evaluation metric from a JSON field, three decimals; '—' when it is not a number."""
    return numbers.metric(value) if isinstance(value, int | float) and not isinstance(value, bool) else "—"


@admin.display(description="DICOM header")
def dicom_header_table(admin_: Any, obj: Any) -> SafeString | str:
    """An image's DICOM header in words (formatting.words.dicom_facts), as a table."""
    facts = dicom_facts(obj.dicom_metadata)
    return value_html({fact.label: fact.value for fact in facts}) if facts else "— (not a DICOM file)"
