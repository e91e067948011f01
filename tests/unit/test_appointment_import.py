"""Reading appointment files: every row is either loaded or named with its problem."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from syncwarden.connectors.scheduling.appointment_import import (
    parse_appointments_csv,
    parse_appointments_ics,
)
from syncwarden.connectors.scheduling.ports import Window

HEADER = "profile_id,id,subject,start,end,time_zone,all_day,location,cancelled\n"


def test_csv_rows_become_appointments_in_their_zone_and_bad_rows_are_named() -> None:
    text = HEADER + (
        "P-1,A-1,Intake,2026-03-30T09:00,2026-03-30T10:00,Europe/London,no,Room 1,\n"
        "P-1,A-2,Leave,2026-04-02,,Europe/London,yes,,\n"
        "P-2,A-3,Late,2026-04-02T10:00,2026-04-02T09:00,UTC,,,\n"
        "P-2,A-4,Where,2026-04-02T10:00,2026-04-02T11:00,Mars/Olympus,,,\n"
        "P-2,,No id,2026-04-02T10:00,2026-04-02T11:00,UTC,,,\n"
        "P-2,A-6,Gone,2026-04-02T10:00,2026-04-02T11:00,UTC,maybe,,\n"
    )

    parsed = parse_appointments_csv(text)

    (p1, timed), (p2, all_day) = parsed.appointments
    assert (p1, p2) == ("P-1", "P-1")
    assert timed.start == datetime(2026, 3, 30, 8, 0, tzinfo=UTC)  # 09:00 BST
    assert timed.location == "Room 1" and not timed.all_day
    assert all_day.all_day and all_day.end - all_day.start == timedelta(days=1)
    assert parsed.errors == [
        "line 4: the end must be after the start",
        "line 5: 'Mars/Olympus' is not a time zone like Europe/London",
        "line 6: id is empty",
        "line 7: all_day must be yes or no, not 'maybe'",
    ]


def test_a_csv_without_the_required_columns_is_refused_whole() -> None:
    parsed = parse_appointments_csv("id,subject\nA-1,x\n")
    assert parsed.appointments == []
    assert parsed.errors == ["line 1: the header lacks profile_id, start"]


@given(st.text(max_size=400))
def test_any_csv_text_is_either_loaded_or_reported_never_raised(text: str) -> None:
    parsed = parse_appointments_csv(HEADER + text)
    rows = len(parsed.appointments) + len(parsed.errors)
    assert rows <= max(1, (HEADER + text).count("\n") + (HEADER + text).count("\r") + 1)
    for _, appointment in parsed.appointments:
        assert appointment.end > appointment.start


ICS = b"""BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//example.edu//test//EN
BEGIN:VEVENT
UID:weekly-1
DTSTART;TZID=Europe/London:20260323T090000
DTEND;TZID=Europe/London:20260323T100000
RRULE:FREQ=WEEKLY;COUNT=3
SUMMARY:Clinic
END:VEVENT
BEGIN:VEVENT
UID:day-off
DTSTART;VALUE=DATE:20260401
DTEND;VALUE=DATE:20260402
SUMMARY:Leave
STATUS:CANCELLED
END:VEVENT
END:VCALENDAR
"""


def test_ics_recurrences_expand_to_single_appointments_across_dst() -> None:
    window = Window(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 5, 1, tzinfo=UTC))

    parsed = parse_appointments_ics(ICS, "P-1", window, default_zone="Europe/London")

    assert parsed.errors == []
    weekly = sorted(
        (a for _, a in parsed.appointments if a.id.startswith("weekly-1@")), key=lambda a: a.start
    )
    assert len(weekly) == 3 and len({a.id for a in weekly}) == 3
    london = ZoneInfo("Europe/London")
    assert [a.start.astimezone(london).hour for a in weekly] == [9, 9, 9]
    assert [a.start.astimezone(UTC).hour for a in weekly] == [9, 8, 8]  # BST from 29 March
    # A cancelled event is simply absent: the import cancels what a file no longer has.
    assert [a.id for _, a in parsed.appointments if a.id == "day-off"] == []


def test_an_unreadable_ics_file_is_one_clear_error() -> None:
    window = Window(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 5, 1, tzinfo=UTC))
    parsed = parse_appointments_ics(b"not a calendar", "P-1", window)
    assert parsed.appointments == []
    assert parsed.errors[0].startswith("the file is not a readable iCalendar file")
