"""How numbers, times and study states are written for clinicians."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from django import template
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from diagnostics.formatting import numbers
from diagnostics.formatting import subtype as subtype_words
from diagnostics.formatting.words import DicomFact
from diagnostics.formatting.words import dicom_facts as display_dicom_facts
from diagnostics.selectors import study_taken_on
from diagnostics.selectors.warnings import study_warnings

register = template.Library()


@register.filter
def percent(value: float | None) -> str:
    """A share of films or readings: formatting.numbers.rate_percent ('25.0 %')."""
    return numbers.rate_percent(value)


@register.filter
def score(value: float | None, beside: float | None = None) -> str:
    """A model's score or threshold: formatting.numbers.score_percent ('49.6 %', '> 99.9 %'); after the
    colon, the number it is read against (`prediction.probability|score:prediction.threshold`)."""
    return numbers.score_percent(value, beside)


@register.filter
def subtype_label(subtype: dict[str, Any] | None) -> str:
    """The AI's bacterial-or-viral suggestion's label in words (formatting.subtype)."""
    return subtype_words.subtype_label_words(subtype) if subtype else ""


@register.filter
def subtype_uncertainty(subtype: dict[str, Any] | None) -> str:
    """Its probability of viral and expected accuracy in words (formatting.subtype)."""
    return subtype_words.subtype_uncertainty_words(subtype) if subtype else ""


@register.filter
def latency(value: float | None) -> str:
    """Whole milliseconds: formatting.numbers.latency_ms ('33 ms')."""
    return numbers.latency_ms(value)


@register.filter
def metric(value: float | None) -> str:
    """An evaluation metric with three decimals: formatting.numbers.metric ('0.972')."""
    return numbers.metric(value)


@register.filter
def metric_interval(interval: list[float] | None) -> str:
    """A metric's 95 % interval: formatting.numbers.metric_interval ('0.947–0.989')."""
    return numbers.metric_interval(interval)


@register.filter
def dicom_date(value: str | None) -> str:
    """DICOM's YYYYMMDD as YYYY-MM-DD; anything else as it is."""
    text = str(value or "")
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text


@register.filter
def dicom_facts(metadata: dict[str, Any] | None, always: str = "") -> list[DicomFact]:
    """`{% for fact in image.dicom_metadata|dicom_facts:"StudyDate,Modality" %}`: the header in words
    (display.dicom_facts); the fields named after the colon are listed as "not recorded" when missing."""
    return display_dicom_facts(metadata, always=[tag for tag in always.split(",") if tag])


@register.filter
def age_at(birth_date: date | None, moment: datetime | date | None) -> str:
    """A child's age on a day, as a paediatric worklist writes it: '7 mo' under two years, else '3 y 2 mo';
    'age unknown' for a patient registered without a birth date (a PACS sent none)."""
    if birth_date is None:
        return "age unknown"
    if moment is None:
        return "—"
    if isinstance(moment, datetime):
        moment = (timezone.localtime(moment) if timezone.is_aware(moment) else moment).date()
    months = (moment.year - birth_date.year) * 12 + moment.month - birth_date.month - (moment.day < birth_date.day)
    if months < 0:
        return "—"
    if months < 24:
        return f"{months} mo"
    return f"{months // 12} y {months % 12} mo"


@register.filter
def taken_on(study: Any) -> date:
    """`{{ study|taken_on }}`: the day the study's films were taken (selectors.study_taken_on), the day
    the patient's age is given for, as the intended-use check does."""
    return study_taken_on(study=study)


_ROW_WARNING = (
    '<span class="row-warning row-warning-{}"><svg class="icon" aria-hidden="true" focusable="false" '
    'viewBox="0 0 16 16" width="16" height="16"><path d="M8 1.2l7 13.3H1z" fill="currentColor"/>'
    '<path d="M8 5.5v4.2M8 11.2v1.4" stroke="#fff" stroke-width="1.7"/></svg> {}</span>'
)


@register.simple_tag
def row_warnings(study: Any) -> SafeString:
    """`{% row_warnings study %}`: the study's warnings by their titles, each with a warning sign, under a
    list row's result (the worklist, a patient's history), whose images come prefetched
    (study_list_with_warning_facts). A tag: one per row, no template include."""
    return format_html_join("", _ROW_WARNING, ((w.code, w.title) for w in study_warnings(study=study)))


@register.filter
def warning_heading(text: str) -> tuple[str, str]:
    """A film's stored warning ('Outside intended use: the patient …', 'Age unknown: Neither …') as its
    heading and its sentences, these starting with a capital letter: ('Outside intended use', 'The patient …')."""
    heading, separator, rest = str(text or "").partition(": ")
    if not separator or len(heading) > 40:
        return "", str(text or "")
    return heading, rest[:1].upper() + rest[1:]


# Times on the pages and in the PDF are in the portal's time zone (settings.TIME_ZONE), and say which.
_TIME_FORMATS = {"": "%Y-%m-%d %H:%M", "seconds": "%Y-%m-%d %H:%M:%S"}


def _local(value: datetime) -> datetime:
    return timezone.localtime(value) if timezone.is_aware(value) else value


def _zone_abbreviation(local: datetime) -> str:
    # The abbreviation people know (CET, BST, UTC); a zone without one gives its offset (+04).
    return local.tzname() or local.strftime("%z")


@register.filter
def zoned_time(value: datetime | None, precision: str = "") -> str:
    """A moment in the portal's time zone with the zone named: '2024-05-01 14:03 CEST'; `zoned_time:"seconds"`
    adds the seconds. Plain text, for the PDF report; pages use time_tag."""
    if value is None:
        return ""
    local = _local(value)
    return f"{local.strftime(_TIME_FORMATS.get(precision, _TIME_FORMATS['']))} {_zone_abbreviation(local)}"


@register.filter
def time_tag(value: datetime | None, precision: str = "") -> str:
    """A moment as <time datetime="ISO">YYYY-MM-DD HH:MM ZONE</time> (zoned_time), with the zone's full
    name (Europe/Paris) in its title.

    Same output as the `date` filter twice, at a tenth of its cost: the worklist writes one per row.
    """
    if value is None:
        return ""
    local = _local(value)
    return format_html(
        '<time datetime="{}" title="{} time">{}</time>',
        local.isoformat(),
        timezone.get_current_timezone_name(),
        zoned_time(local, precision),
    )


@register.simple_tag
def time_zone_name() -> str:
    """`{% time_zone_name %}`: the portal's time zone as configured (Europe/Paris, UTC)."""
    return str(timezone.get_current_timezone_name())


@register.filter
def person(user: Any) -> str:
    """A clinician as a report names them: 'Alice Martin (alice)', or the username alone when no name is kept."""
    if user is None:
        return ""
    username = user.get_username()
    full_name = user.get_full_name().strip()
    return f"{full_name} ({username})" if full_name and full_name != username else username


# A study's status as an icon plus its word (never a colour alone); one markup per state, the word
# filled in (and escaped) by format_html. A tag, not a template include: the worklist has one per row.
_ICON = (
    '<span class="status status-{status}"><svg class="icon" aria-hidden="true" focusable="false" '
    'viewBox="0 0 16 16" width="16" height="16">{shapes}</svg> {{}}</span>'
)
_STATUS_MARKUP = {
    status: _ICON.format(status=status, shapes=shapes)
    for status, shapes in {
        "done": '<circle cx="8" cy="8" r="7" fill="currentColor"/>'
        '<path d="M4.5 8.2l2.3 2.3 4.7-4.9" fill="none" stroke="#fff" stroke-width="1.8"/>',
        "failed": '<circle cx="8" cy="8" r="7" fill="currentColor"/>'
        '<path d="M5.2 5.2l5.6 5.6M10.8 5.2l-5.6 5.6" stroke="#fff" stroke-width="1.8"/>',
        "running": '<circle cx="8" cy="8" r="6" fill="none" stroke="currentColor" stroke-width="2" '
        'stroke-dasharray="28 10"/><path d="M12.5 1.5v4h-4" fill="none" stroke="currentColor" stroke-width="1.6"/>',
        "queued": '<circle cx="8" cy="8" r="6.5" fill="none" stroke="currentColor" stroke-width="1.5"/>'
        '<path d="M8 4v4.3l2.8 1.7" fill="none" stroke="currentColor" stroke-width="1.5"/>',
        # Done, yet no film was scored: neither the reassuring tick nor a failure's cross.
        "done-no-result": '<circle cx="8" cy="8" r="6.5" fill="none" stroke="currentColor" stroke-width="1.5"/>'
        '<path d="M4.5 8h7" stroke="currentColor" stroke-width="1.8"/>',
    }.items()
}


@register.simple_tag
def status_badge(study: Any) -> SafeString:
    """`{% status_badge study %}`: the study's status word next to its icon. A done study without an AI
    result (no film scored: Study.latest_probability is empty) says so instead of the tick of a result."""
    if study.status == "done" and getattr(study, "latest_probability", 0.0) is None:
        return format_html(_STATUS_MARKUP["done-no-result"], "Done, no AI result")
    return format_html(_STATUS_MARKUP.get(study.status, _STATUS_MARKUP["queued"]), study.get_status_display())
