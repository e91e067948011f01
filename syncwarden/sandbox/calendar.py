"""The calendar model: events as Exchange stores them, and recurrence expansion.

Graph returns times in UTC unless the caller sends ``Prefer: outlook.timezone``; recurrences are
expanded in the series' own time zone so a weekly 09:00 stays 09:00 across DST changes.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import secrets
import uuid
import zoneinfo
from dataclasses import dataclass, field
from typing import Any

from syncwarden.sandbox.odata import GraphError, JsonDict

# Windows names Graph accepts, mapped to IANA; enough for the seeds and tests we write.
WINDOWS_ZONES = {
    "UTC": "UTC",
    "GMT Standard Time": "Europe/London",
    "W. Europe Standard Time": "Europe/Berlin",
    "Romance Standard Time": "Europe/Paris",
    "Eastern Standard Time": "America/New_York",
    "Central Standard Time": "America/Chicago",
    "Mountain Standard Time": "America/Denver",
    "Pacific Standard Time": "America/Los_Angeles",
    "AUS Eastern Standard Time": "Australia/Sydney",
    "New Zealand Standard Time": "Pacific/Auckland",
}
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# Writable event properties we model; other names in the schema are stored and echoed back.
MODELLED = {
    "subject",
    "body",
    "start",
    "end",
    "isAllDay",
    "showAs",
    "location",
    "categories",
    "recurrence",
    "transactionId",
    "singleValueExtendedProperties",
}
PASSTHROUGH = {
    "importance",
    "sensitivity",
    "isReminderOn",
    "reminderMinutesBeforeStart",
    "responseRequested",
    "allowNewTimeProposals",
    "hideAttendees",
    "isOnlineMeeting",
    "attendees",
    "originalStartTimeZone",
    "originalEndTimeZone",
}
EVENT_PROPERTIES = (
    "id",
    "createdDateTime",
    "lastModifiedDateTime",
    "changeKey",
    "categories",
    "transactionId",
    "originalStartTimeZone",
    "originalEndTimeZone",
    "iCalUId",
    "reminderMinutesBeforeStart",
    "isReminderOn",
    "subject",
    "bodyPreview",
    "importance",
    "sensitivity",
    "isAllDay",
    "isCancelled",
    "isOrganizer",
    "responseRequested",
    "seriesMasterId",
    "showAs",
    "type",
    "webLink",
    "body",
    "start",
    "end",
    "location",
    "recurrence",
    "attendees",
    "organizer",
)
SHOW_AS = ("free", "tentative", "busy", "oof", "workingElsewhere", "unknown")
_DATETIME = re.compile(
    r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2})?)(\.\d{1,7})?(Z|[+-]\d{2}:\d{2})?$"
)


def invalid(message: str, code: str = "ErrorInvalidRequest") -> GraphError:
    return GraphError(400, code, message)


def zone(name: str) -> dt.tzinfo:
    iana = WINDOWS_ZONES.get(name, name)
    try:
        return zoneinfo.ZoneInfo(iana)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise invalid(
            "A valid TimeZone value must be specified. "
            f"The following TimeZone value is not supported: '{name}'.",
            "TimeZoneNotSupportedException",
        ) from exc


def parse_datetime_tz(value: Any, field_name: str) -> tuple[dt.datetime, str]:
    """A dateTimeTimeZone as UTC; an explicit offset in the text wins over timeZone."""
    if not isinstance(value, dict) or not isinstance(value.get("dateTime"), str):
        raise invalid(f"The property '{field_name}' must be a dateTimeTimeZone object.")
    tz_name = value.get("timeZone") or "UTC"
    if not isinstance(tz_name, str):
        raise invalid("TimeZone must be a string.")
    match = _DATETIME.match(value["dateTime"])
    if match is None:
        raise invalid(f"Cannot convert the literal '{value['dateTime']}' to the expected type.")
    base = dt.datetime.fromisoformat(match.group(1))
    if match.group(2):
        base = base.replace(microsecond=int(match.group(2)[1:].ljust(7, "0")[:6]))
    offset = match.group(3)
    if offset:
        aware = base.replace(
            tzinfo=dt.UTC
            if offset == "Z"
            else dt.datetime.strptime(offset.replace(":", ""), "%z").tzinfo
        )
    else:
        aware = base.replace(tzinfo=zone(tz_name))
    return aware.astimezone(dt.UTC), tz_name


def format_datetime(moment: dt.datetime, tz_name: str = "UTC") -> JsonDict:
    local = moment.astimezone(zone(tz_name))
    return {
        "dateTime": local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{local.microsecond:06d}0",
        "timeZone": tz_name,
    }


def graph_timestamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}0Z"


def new_event_id() -> str:
    return (
        "AAMkAGI2" + base64.urlsafe_b64encode(uuid.uuid4().bytes * 2).decode().rstrip("=") + "AAA="
    )


def occurrence_id(master_id: str, start: dt.datetime) -> str:
    raw = f"{master_id}|{start.strftime('%Y%m%dT%H%M%S')}".encode()
    return "AAMkOcc" + base64.urlsafe_b64encode(raw).decode()


@dataclass
class CalendarEvent:
    id: str
    start: dt.datetime
    end: dt.datetime
    start_tz: str
    end_tz: str
    subject: str | None = None
    body: JsonDict = field(default_factory=lambda: {"contentType": "html", "content": ""})
    is_all_day: bool = False
    show_as: str = "busy"
    location: JsonDict = field(default_factory=lambda: {"displayName": ""})
    categories: list[str] = field(default_factory=list)
    recurrence: JsonDict | None = None
    transaction_id: str | None = None
    extended: list[JsonDict] = field(default_factory=list)
    extra: JsonDict = field(default_factory=dict)
    created: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    modified: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    change_key: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    ical_uid: str = field(
        default_factory=lambda: "040000008200E00074C5B7101A82E008" + uuid.uuid4().hex.upper()
    )

    def touch(self) -> None:
        self.modified = dt.datetime.now(dt.UTC)
        self.change_key = secrets.token_urlsafe(18)

    def to_graph(
        self,
        tz_name: str = "UTC",
        *,
        instance: tuple[dt.datetime, dt.datetime] | None = None,
    ) -> JsonDict:
        start, end = instance or (self.start, self.end)
        is_occurrence = instance is not None
        text = str(self.body.get("content") or "")
        data: JsonDict = {
            "@odata.etag": f'W/"{self.change_key}"',
            "id": occurrence_id(self.id, start) if is_occurrence else self.id,
            "createdDateTime": graph_timestamp(self.created),
            "lastModifiedDateTime": graph_timestamp(self.modified),
            "changeKey": self.change_key,
            "categories": list(self.categories),
            "transactionId": None if is_occurrence else self.transaction_id,
            "originalStartTimeZone": self.start_tz,
            "originalEndTimeZone": self.end_tz,
            "iCalUId": self.ical_uid,
            "reminderMinutesBeforeStart": 15,
            "isReminderOn": True,
            "subject": self.subject,
            "bodyPreview": re.sub(r"<[^>]+>", "", text)[:255],
            "importance": "normal",
            "sensitivity": "normal",
            "isAllDay": self.is_all_day,
            "isCancelled": False,
            "isOrganizer": True,
            "responseRequested": True,
            "seriesMasterId": self.id if is_occurrence else None,
            "showAs": self.show_as,
            "type": "occurrence"
            if is_occurrence
            else ("seriesMaster" if self.recurrence else "singleInstance"),
            "webLink": f"https://outlook.office365.com/owa/?itemid={self.id}&exvsurl=1&path=/calendar/item",
            "body": dict(self.body),
            "start": format_datetime(start, tz_name),
            "end": format_datetime(end, tz_name),
            "location": dict(self.location),
            "recurrence": None if is_occurrence else self.recurrence,
            "attendees": [],
            "organizer": None,
        }
        data.update({k: v for k, v in self.extra.items() if k != "attendees" or v})
        return data

    # ------------------------------------------------------------ recurrence

    def instances(
        self, window_start: dt.datetime, window_end: dt.datetime
    ) -> list[tuple[dt.datetime, dt.datetime]]:
        """Occurrence (start, end) pairs overlapping the window, in UTC."""
        if self.recurrence is None:
            if self.start < window_end and self.end > window_start:
                return [(self.start, self.end)]
            return []
        duration = self.end - self.start
        tz = zone(self.start_tz)
        local_start = self.start.astimezone(tz)
        found: list[tuple[dt.datetime, dt.datetime]] = []
        for day in occurrence_dates(
            self.recurrence, local_start.date(), window_end.astimezone(tz).date()
        ):
            begin = dt.datetime.combine(day, local_start.time(), tzinfo=tz).astimezone(dt.UTC)
            finish = begin + duration
            if begin < window_end and finish > window_start:
                found.append((begin, finish))
        return found


def validate_recurrence(value: Any) -> JsonDict:
    if not isinstance(value, dict):
        raise invalid("Recurrence must be an object.")
    pattern, rng = value.get("pattern"), value.get("range")
    if not isinstance(pattern, dict) or not isinstance(rng, dict):
        raise invalid("Recurrence requires both a pattern and a range.")
    kind = pattern.get("type")
    if kind not in ("daily", "weekly"):
        raise invalid(f"Recurrence pattern type '{kind}' is not supported by the sandbox.")
    interval = pattern.get("interval", 1)
    if not isinstance(interval, int) or interval < 1:
        raise invalid("Recurrence pattern interval must be a positive integer.")
    days = pattern.get("daysOfWeek") or []
    if kind == "weekly" and (not days or any(d not in DAYS for d in days)):
        raise invalid("A weekly recurrence needs daysOfWeek.")
    range_type = rng.get("type")
    if range_type not in ("endDate", "noEnd", "numbered"):
        raise invalid(f"Recurrence range type '{range_type}' is not valid.")
    try:
        start_date = dt.date.fromisoformat(str(rng.get("startDate")))
        end_date = dt.date.fromisoformat(str(rng["endDate"])) if range_type == "endDate" else None
    except (ValueError, KeyError) as exc:
        raise invalid("Recurrence range needs a valid startDate (and endDate).") from exc
    if end_date is not None and end_date < start_date:
        raise invalid("The recurrence range endDate is before its startDate.")
    count = rng.get("numberOfOccurrences", 0)
    if range_type == "numbered" and (not isinstance(count, int) or count < 1):
        raise invalid("A numbered recurrence range needs numberOfOccurrences > 0.")
    return {
        "pattern": {
            "type": kind,
            "interval": interval,
            "month": 0,
            "dayOfMonth": 0,
            "daysOfWeek": list(days),
            "firstDayOfWeek": pattern.get("firstDayOfWeek", "sunday"),
            "index": "first",
        },
        "range": {
            "type": range_type,
            "startDate": start_date.isoformat(),
            "endDate": end_date.isoformat() if end_date else "0001-01-01",
            "recurrenceTimeZone": rng.get("recurrenceTimeZone", "UTC"),
            "numberOfOccurrences": count if range_type == "numbered" else 0,
        },
    }


def occurrence_dates(recurrence: JsonDict, first: dt.date, horizon: dt.date) -> list[dt.date]:
    pattern, rng = recurrence["pattern"], recurrence["range"]
    start = max(first, dt.date.fromisoformat(rng["startDate"]))
    end = dt.date.fromisoformat(rng["endDate"]) if rng["type"] == "endDate" else None
    limit = rng["numberOfOccurrences"] if rng["type"] == "numbered" else None
    interval = pattern["interval"]
    dates: list[dt.date] = []
    if pattern["type"] == "daily":
        candidates = (start + dt.timedelta(days=interval * k) for k in range(100_000))
    else:
        week_start = DAYS.index(pattern["firstDayOfWeek"])
        offset = (start.weekday() - week_start) % 7
        first_week = start - dt.timedelta(days=offset)
        wanted = sorted((DAYS.index(d) - week_start) % 7 for d in pattern["daysOfWeek"])
        candidates = (
            first_week + dt.timedelta(days=7 * interval * w + d)
            for w in range(100_000)
            for d in wanted
        )
    for day in candidates:
        if day < start:
            continue
        if (end is not None and day > end) or day > horizon + dt.timedelta(days=1):
            break
        dates.append(day)
        if limit is not None and len(dates) >= limit:
            break
    return dates


def apply_fields(event: CalendarEvent, payload: JsonDict, *, creating: bool) -> None:
    """Validate and copy writable fields; unknown names fail as Graph's OData reader does."""
    for name in payload:
        if name.startswith("@odata."):
            continue
        if name not in MODELLED and name not in PASSTHROUGH:
            if name in EVENT_PROPERTIES:
                continue
            raise invalid(
                f"The property '{name}' does not exist on type 'microsoft.graph.event'. Make sure "
                "to only use property names that are defined by the type or mark the type as "
                "open type.",
                "RequestBodyRead",
            )
        if name == "transactionId" and not creating:
            continue
    if "start" in payload:
        event.start, event.start_tz = parse_datetime_tz(payload["start"], "start")
    if "end" in payload:
        event.end, event.end_tz = parse_datetime_tz(payload["end"], "end")
    if event.end < event.start:
        raise invalid(
            "The end date occurs before the start date.",
            "ErrorCalendarEndDateIsEarlierThanStartDate",
        )
    if "subject" in payload:
        event.subject = payload["subject"]
    if "body" in payload:
        body = payload["body"] or {}
        if not isinstance(body, dict) or body.get("contentType", "text").lower() not in (
            "text",
            "html",
        ):
            raise invalid("The body must be an itemBody with contentType text or html.")
        event.body = {
            "contentType": body.get("contentType", "text").lower(),
            "content": body.get("content", ""),
        }
    if "isAllDay" in payload:
        event.is_all_day = bool(payload["isAllDay"])
    if "showAs" in payload:
        if payload["showAs"] not in SHOW_AS:
            raise invalid(
                f"The value '{payload['showAs']}' is not valid for showAs.", "RequestBodyRead"
            )
        event.show_as = payload["showAs"]
    if "location" in payload:
        location = payload["location"] or {}
        event.location = {"displayName": location.get("displayName", "")}
    if "categories" in payload:
        event.categories = [str(c) for c in payload["categories"] or []]
    if "recurrence" in payload:
        event.recurrence = (
            validate_recurrence(payload["recurrence"]) if payload["recurrence"] else None
        )
    if "singleValueExtendedProperties" in payload:
        for prop in payload["singleValueExtendedProperties"] or []:
            if not isinstance(prop, dict) or not isinstance(prop.get("id"), str):
                raise invalid("An extended property needs an id and a value.")
            event.extended = [p for p in event.extended if p["id"].lower() != prop["id"].lower()]
            event.extended.append({"id": prop["id"], "value": str(prop.get("value", ""))})
    for name in PASSTHROUGH & payload.keys():
        event.extra[name] = payload[name]
