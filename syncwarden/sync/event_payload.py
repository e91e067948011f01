"""What an appointment looks like as an Outlook event, and the fingerprint that says it changed.

Timed appointments are sent as UTC instants: the conversion from the booked wall-clock time
happened once, with the IANA rules, when the source was read, so DST weekends cannot shift
them. All-day appointments are sent as whole dates at midnight in the zone they were booked in,
with the end date exclusive, which is what keeps them from landing a day early or late.

Subjects go through a template because appointment titles often carry client names, which
should not appear in a calendar colleagues can see; the default shows none.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from syncwarden.connectors.scheduling.ports import Appointment
from syncwarden.core.settings import subject_template_problem

DEFAULT_SUBJECT_TEMPLATE = "Appointment"
# Bump when the payload's shape changes, so every pushed event is rewritten once.
PAYLOAD_VERSION = "1"


class SubjectTemplateError(ValueError):
    """The configured subject template uses a placeholder we do not offer."""


def render_subject(template: str, appointment: Appointment) -> str:
    problem = _template_problem(template)
    if problem:
        raise SubjectTemplateError(problem)
    text = template.format(subject=appointment.subject, location=appointment.location or "")
    return " ".join(text.split())[:255] or DEFAULT_SUBJECT_TEMPLATE


@lru_cache(maxsize=16)
def _template_problem(template: str) -> str | None:
    """The template is checked once, not once per appointment (a sync renders thousands)."""
    return subject_template_problem(template)


def local_dates(appointment: Appointment) -> tuple[date, date]:
    """First day and the day after the last (exclusive) of an all-day appointment."""
    zone = zone_of(appointment.time_zone)
    first = appointment.start.astimezone(zone).date()
    end = appointment.end.astimezone(zone)
    # An end inside a day includes that day; the result always spans at least one day.
    after = end.date() + timedelta(days=1) if end.time() != datetime.min.time() else end.date()
    return first, max(after, first + timedelta(days=1))


def zone_of(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def event_payload(appointment: Appointment, subject_template: str) -> dict[str, Any]:
    """The Graph event body for ``appointment`` (without our tag and transaction id)."""
    body: dict[str, Any] = {
        "subject": render_subject(subject_template, appointment),
        "showAs": "busy",
        "isReminderOn": False,
        "categories": [],
    }
    if appointment.all_day:
        first, after = local_dates(appointment)
        zone = zone_of(appointment.time_zone).key  # an unknown zone falls back to UTC
        body["isAllDay"] = True
        body["start"] = {"dateTime": f"{first.isoformat()}T00:00:00", "timeZone": zone}
        body["end"] = {"dateTime": f"{after.isoformat()}T00:00:00", "timeZone": zone}
    else:
        body["isAllDay"] = False
        body["start"] = _utc(appointment.start)
        body["end"] = _utc(max(appointment.end, appointment.start))
    if appointment.location and "{location}" in subject_template:
        body["location"] = {"displayName": appointment.location[:255]}
    return body


def content_hash(payload: dict[str, Any]) -> str:
    """A stable fingerprint of what we would write; equal hashes mean nothing to update."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{PAYLOAD_VERSION}:{canonical}".encode()).hexdigest()


def graph_instant(value: Any) -> datetime | None:
    """A Graph ``dateTimeTimeZone`` (UTC unless a zone is named) as an aware UTC datetime."""
    if not isinstance(value, dict) or not isinstance(value.get("dateTime"), str):
        return None
    text = value["dateTime"].rstrip("Z")
    head, _, fraction = text.partition(".")
    try:
        moment = datetime.fromisoformat(head)
    except ValueError:
        return None
    if fraction.isdigit():
        moment = moment.replace(microsecond=int(fraction[:6].ljust(6, "0")))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone_of(str(value.get("timeZone") or "UTC")))
    return moment.astimezone(UTC)


def _utc(moment: datetime) -> dict[str, str]:
    return {"dateTime": moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"}
