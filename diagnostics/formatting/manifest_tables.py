"""A model version's JSON (manifest, metrics, the gate's evaluation) as read-only tables for the admin.

Every evaluation summary (a split's metrics: validation, external, the gate set, other evaluations) is
one table of metrics with their 95 % intervals, as the Models page shows them; everything else is a
key/value table, nested where the JSON nests, lists of rows as a table with a column per key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.template.loader import render_to_string
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from diagnostics.formatting.words import is_evaluation_summary, metric_rows

SPLIT_TITLES = {
    "validation": "Validation (patient-grouped split of the training period)",
    "external": "External: films of a new period (never trained on)",
}
# The manifest's identity first; then every other key in alphabetical order (PostgreSQL's jsonb keeps
# no order of its own, so the order is chosen here, the same on every page).
MANIFEST_FIRST = (
    "name", "version", "architecture", "input_size", "preprocessing_version", "class_names", "threshold",
    "threshold_rule", "intended_use",
)  # fmt: skip
# Rows of a list shown whole; a longer list is summarised (a file list has thousands).
MAX_LIST_ROWS = 50


def _number(value: float) -> str:
    return f"{value:.4g}"


def _words(key: object) -> str:
    return str(key).replace("_", " ")


def value_html(value: Any) -> SafeString:
    """One JSON value as HTML: a scalar in words, a mapping as a key/value table, rows as a table."""
    if value is None:
        return format_html("{}", "—")
    if isinstance(value, bool):
        return format_html("{}", "yes" if value else "no")
    if isinstance(value, float):
        return format_html("{}", _number(value))
    if isinstance(value, Mapping):
        return _mapping_table(value)
    if isinstance(value, list):
        return _list_html(value)
    return format_html("{}", value)


def _ordered(value: Mapping[str, Any], first: tuple[str, ...] = ()) -> list[tuple[str, Any]]:
    return sorted(value.items(), key=lambda item: (first.index(item[0]) if item[0] in first else len(first), item[0]))


def _mapping_table(value: Mapping[str, Any], first: tuple[str, ...] = ()) -> SafeString:
    if not value:
        return format_html("{}", "—")
    rows = format_html_join(
        "",
        '<tr><th scope="row">{}</th><td>{}</td></tr>',
        ((_words(key), value_html(item)) for key, item in _ordered(value, first)),
    )
    return format_html('<table class="json-table"><tbody>{}</tbody></table>', rows)


def _list_html(value: list[Any]) -> SafeString:
    if not value:
        return format_html("{}", "—")
    if len(value) > MAX_LIST_ROWS:
        return format_html("{} items (see the manifest file)", len(value))
    if all(isinstance(item, Mapping) for item in value):
        columns = list(dict.fromkeys(key for item in value for key in item))
        head = format_html_join("", '<th scope="col">{}</th>', ((_words(column),) for column in columns))
        body = format_html_join(
            "",
            "<tr>{}</tr>",
            ((format_html_join("", "<td>{}</td>", ((value_html(item.get(c)),) for c in columns)),) for item in value),
        )
        return format_html('<table class="json-table"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>', head, body)
    return format_html_join(", ", "{}", ((value_html(item),) for item in value))


def _split_tables(metrics: Mapping[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The evaluation summaries among `metrics` (one level deep too: other_evaluations), and the rest."""
    splits, rest = [], {}
    for key, value in _ordered(metrics, tuple(SPLIT_TITLES)):
        if is_evaluation_summary(value):
            splits.append(_split(SPLIT_TITLES.get(key, _words(key).capitalize()), value))
        elif isinstance(value, Mapping) and value and all(is_evaluation_summary(item) for item in value.values()):
            splits += [_split(f"{_words(key).capitalize()}: {name}", item) for name, item in _ordered(value)]
        else:
            rest[key] = value
    return splits, rest


def _split(title: str, summary: Mapping[str, Any]) -> dict[str, Any]:
    shown = {
        "n",
        "n_positive",
        "ci95",
        "confusion_matrix",
        *(row["key"] for row in metric_rows(summary)),
    }
    return {
        "title": title,
        "summary": summary,
        "rows": metric_rows(summary),
        "confusion": summary.get("confusion_matrix"),
        "details": value_html({key: item for key, item in summary.items() if key not in shown}),
    }


def metrics_html(metrics: Mapping[str, Any] | None, *, label: str) -> SafeString:
    """A model's metrics (or the gate's evaluation): a table per evaluated split, then the other figures."""
    splits: list[dict[str, Any]]
    rest: dict[str, Any] = {}
    if is_evaluation_summary(metrics):  # one evaluation (the gate set's) rather than a model's splits
        splits = [_split(label, metrics or {})]
    else:
        splits, rest = _split_tables(metrics or {})
    context = {"splits": splits, "rest": value_html(rest) if rest else "", "label": label}
    return render_to_string("admin/diagnostics/modelversion/_metrics.html", context)


def manifest_html(manifest: Mapping[str, Any] | None) -> SafeString:
    """The manifest as nested key/value tables; its metrics are shown apart (metrics_html)."""
    shown = {key: value for key, value in (manifest or {}).items() if key != "metrics"}
    return format_html(
        '<div class="json-scroll" role="region" aria-label="Manifest" tabindex="0">{}</div>',
        _mapping_table(shown, MANIFEST_FIRST),
    )
