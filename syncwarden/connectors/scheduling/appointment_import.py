"""Appointments from a CSV export or an iCalendar file, row by row, with every bad row named.

CSV columns (header required, any order, any case): ``profile_id, id, subject, start, end`` and
optionally ``time_zone`` (IANA, default UTC), ``all_day``, ``location``, ``cancelled``. Times are
wall-clock times in ``time_zone`` unless they carry an offset; all-day rows take dates, with an
exclusive end (a missing end means one day).

iCalendar files belong to one profile (given by the caller). Recurring events are expanded
inside the window into single appointments whose ids are the event's UID plus the occurrence's
start, so an edited occurrence updates the one event it belongs to.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import icalendar
import recurring_ical_events

from syncwarden.connectors.scheduling.ports import Appointment, Window

REQUIRED_COLUMNS = ("profile_id", "id", "subject", "start")
TRUE_WORDS = frozenset({"1", "true", "yes", "y"})
FALSE_WORDS = frozenset({"", "0", "false", "no", "n"})


@dataclass
class ParsedAppointments:
    appointments: list[tuple[str, Appointment]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class RowError(ValueError):
    pass


def parse_appointments_csv(text: str) -> ParsedAppointments:
    result = ParsedAppointments()
    # newline="" lets the csv module see \r and \r\n itself (quoted fields may hold them).
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        columns = {name.strip().lower() for name in reader.fieldnames or [] if name}
        missing = [name for name in REQUIRED_COLUMNS if name not in columns]
        if missing:
            result.errors.append(f"line 1: the header lacks {', '.join(missing)}")
            return result
        for raw in reader:
            row = {str(k).strip().lower(): _cell(v) for k, v in raw.items() if k}
            try:
                result.appointments.append((_required(row, "profile_id"), _csv_appointment(row)))
            except RowError as error:
                result.errors.append(f"line {reader.line_num}: {error}")
    except csv.Error as error:
        result.errors.append(f"line {reader.line_num}: the file is not valid CSV ({error})")
    return result


def _cell(value: object) -> str:
    """A cell as text; surplus cells (a row longer than the header) arrive as a list."""
    if isinstance(value, list):
        return ",".join(str(v) for v in value).strip()
    return str(value or "").strip()


def _csv_appointment(row: dict[str, str]) -> Appointment:
    zone_name = row.get("time_zone") or "UTC"
    zone = _zone(zone_name)
    all_day = _flag(row.get("all_day", ""), "all_day")
    if all_day:
        first = _date(_required(row, "start"), "start")
        after = _date(row["end"], "end") if row.get("end") else first + timedelta(days=1)
        if after <= first:
            raise RowError("an all-day end must be after its start (the end date is exclusive)")
        start = datetime.combine(first, time(), zone)
        end = datetime.combine(after, time(), zone)
    else:
        start = _moment(_required(row, "start"), zone, "start")
        end = _moment(_required(row, "end"), zone, "end")
        if end <= start:
            raise RowError("the end must be after the start")
    return Appointment(
        id=_required(row, "id"),
        subject=row.get("subject", ""),
        start=start,
        end=end,
        time_zone=zone_name,
        all_day=all_day,
        location=row.get("location") or None,
        cancelled=_flag(row.get("cancelled", ""), "cancelled"),
    )


def parse_appointments_ics(
    data: bytes, profile_id: str, window: Window, *, default_zone: str = "UTC"
) -> ParsedAppointments:
    result = ParsedAppointments()
    try:
        calendar = icalendar.Calendar.from_ical(data)
        occurrences = recurring_ical_events.of(calendar).between(window.start, window.end)
    except (ValueError, KeyError, IndexError) as error:
        result.errors.append(f"the file is not a readable iCalendar file: {error}")
        return result
    for component in occurrences:
        try:
            result.appointments.append(
                (profile_id, _ics_appointment(component, _zone(default_zone)))
            )
        except RowError as error:
            uid = component.get("UID", "?")
            result.errors.append(f"event {uid}: {error}")
    return result


def _ics_appointment(component: Any, default_zone: ZoneInfo) -> Appointment:
    uid = str(component.get("UID") or "")
    if not uid:
        raise RowError("the event has no UID")
    start_value = component.decoded("DTSTART")
    all_day = not isinstance(start_value, datetime)
    if "DTEND" in component:
        end_value = component.decoded("DTEND")
    elif "DURATION" in component:
        end_value = start_value + component.decoded("DURATION")
    else:
        end_value = start_value + (timedelta(days=1) if all_day else timedelta())
    if all_day:
        zone_name = default_zone.key
        start = datetime.combine(start_value, time(), default_zone)
        end = datetime.combine(end_value, time(), default_zone)
    else:
        zone_name = _zone_name(start_value.tzinfo) or default_zone.key
        start = start_value if start_value.tzinfo else start_value.replace(tzinfo=default_zone)
        end = end_value if end_value.tzinfo else end_value.replace(tzinfo=default_zone)
    if end <= start:
        end = start + (timedelta(days=1) if all_day else timedelta(minutes=1))
    recurring = "RRULE" in component or "RECURRENCE-ID" in component or "RDATE" in component
    occurrence = start.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Appointment(
        id=f"{uid}@{occurrence}" if recurring else uid,
        subject=str(component.get("SUMMARY") or ""),
        start=start,
        end=end,
        time_zone=zone_name,
        all_day=all_day,
        location=str(component.get("LOCATION")) if component.get("LOCATION") else None,
        cancelled=str(component.get("STATUS") or "").upper() == "CANCELLED",
    )


def _zone_name(zone: tzinfo | None) -> str | None:
    key = getattr(zone, "key", None) or getattr(zone, "zone", None)
    if isinstance(key, str):
        return key
    return "UTC" if zone is UTC else None


def _required(row: dict[str, str], name: str) -> str:
    value = row.get(name, "")
    if not value:
        raise RowError(f"{name} is empty")
    return value


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise RowError(f"'{name}' is not a time zone like Europe/London") from None


def _flag(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise RowError(f"{name} must be yes or no, not '{value}'")


def _date(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        raise RowError(f"{name} '{value}' is not a date like 2026-11-23") from None


def _moment(value: str, zone: ZoneInfo, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise RowError(f"{name} '{value}' is not a time like 2026-11-23T09:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


def group_by_profile(
    pairs: Iterable[tuple[str, Appointment]],
) -> dict[str, list[Appointment]]:
    grouped: dict[str, list[Appointment]] = {}
    for profile_id, appointment in pairs:
        grouped.setdefault(profile_id, []).append(appointment)
    return grouped
