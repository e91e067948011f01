"""Demo scheduling data for ``make run``: profiles and appointments for the sandbox's people.

Scheduling profiles and appointments live in Syncwarden's own database (the built-in adapter and
source), not in the sandbox tenant, so a fresh ``make run`` would answer "add me to calendar
sync" with "no scheduling profile matches". When ``serve --sandbox`` starts, this module fills
the empty scheduling tables from ``demo_scheduling.json`` (shipped in the package) so that the
README's Playground walkthrough works on a fresh clone with nothing imported by hand.

It never runs in production, never against anything but the sandbox tenant, only with the
built-in adapter and source (the ones whose tables it fills), and never over data someone
imported: if either table holds a single row, nothing is loaded. The load is one transaction, so
a crash leaves either all of the demo or none of it. Appointment times are placed relative to
the day of the load, so a fresh demo always has appointments in the coming two weeks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from syncwarden.connectors.scheduling.builtin import ProfileRecord
from syncwarden.connectors.scheduling.builtin_appointments import AppointmentRecord
from syncwarden.connectors.scheduling.ports import Appointment, Profile
from syncwarden.core.db import utc_now, write_transaction
from syncwarden.core.logging import get_logger
from syncwarden.core.settings import SchedulingAdapter, Settings, SyncSource, sandbox_target_problem

log = get_logger(__name__)

DEMO_FILE = "demo_scheduling.json"
WORKING_DAYS = 5  # Monday to Friday: weekday() 0..4


@dataclass(frozen=True)
class DemoScheduling:
    """The demo data with every appointment placed on the calendar."""

    profiles: tuple[Profile, ...]
    appointments: tuple[tuple[str, Appointment], ...]  # (profile id, appointment)


@dataclass(frozen=True)
class DemoLoad:
    """What one load put in the tables."""

    profiles: int
    appointments: int
    first: datetime
    last: datetime


def demo_data_text() -> str:
    """The shipped file, read through the package so a wheel install finds it too."""
    return resources.files("syncwarden").joinpath(DEMO_FILE).read_text(encoding="utf-8")


def demo_scheduling(now: datetime, text: str | None = None) -> DemoScheduling:
    """The demo profiles and their appointments, placed relative to ``now``'s date.

    ``workday`` n is the n-th working day (Monday to Friday) after ``now``'s date in the file's
    time zone, so an appointment is never in the past on the day of the load and never on a
    weekend; ``start`` is a wall-clock time there. An ``allDay`` appointment spans that date.
    """
    data: dict[str, Any] = json.loads(text if text is not None else demo_data_text())
    zone_name = str(data["timeZone"])
    zone = ZoneInfo(zone_name)
    today = now.astimezone(zone).date()
    profiles: list[Profile] = []
    appointments: list[tuple[str, Appointment]] = []
    for entry in data["profiles"]:
        profile = Profile(id=str(entry["id"]), name=str(entry["name"]), email=entry.get("email"))
        profiles.append(profile)
        for item in entry.get("appointments", []):
            day = working_day_after(today, int(item["workday"]))
            if item.get("allDay"):
                start = datetime.combine(day, time(), zone)
                end = datetime.combine(day + timedelta(days=1), time(), zone)
            else:
                start = datetime.combine(day, time.fromisoformat(str(item["start"])), zone)
                end = start + timedelta(minutes=int(item["minutes"]))
            appointment = Appointment(
                id=str(item["id"]),
                subject=str(item["subject"]),
                start=start.astimezone(UTC),
                end=end.astimezone(UTC),
                time_zone=zone_name,
                all_day=bool(item.get("allDay", False)),
                location=item.get("location"),
            )
            appointments.append((profile.id, appointment))
    return DemoScheduling(tuple(profiles), tuple(appointments))


def working_day_after(today: date, count: int) -> date:
    """The ``count``-th Monday-to-Friday date after ``today`` (``count`` >= 1)."""
    if count < 1:
        raise ValueError("workday counts from 1, the next working day")
    day = today
    while count:
        day += timedelta(days=1)
        if day.weekday() < WORKING_DAYS:
            count -= 1
    return day


def demo_refusal(settings: Settings) -> str | None:
    """Why the demo data must not be loaded under ``settings``, or None when it may be."""
    if settings.is_production:
        return "production mode never gets demo data"
    if not settings.graph.client_id or sandbox_target_problem(settings) is not None:
        return "Microsoft 365 is not the sandbox tenant"
    if settings.provisioning.scheduling_adapter is not SchedulingAdapter.BUILTIN:
        return "the scheduling adapter is not the built-in one"
    if settings.sync.source is not SyncSource.BUILTIN:
        return "appointments come from another source than the built-in table"
    return None


async def load_demo_scheduling(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    *,
    now: datetime | None = None,
) -> DemoLoad | None:
    """Fill the empty scheduling tables with the demo data; None when nothing was loaded.

    Logs one line either way: ``demo_data.loaded`` with what went in, or ``demo_data.skipped``
    with the reason. Loading again is harmless: the tables are no longer empty.
    """
    refusal = demo_refusal(settings)
    if refusal is not None:
        log.info("demo_data.skipped", reason=refusal)
        return None
    demo = demo_scheduling(now or utc_now())
    try:
        if not await _load_into_empty_tables(sessions, demo):
            return None
    except IntegrityError:
        # Another `serve --sandbox` on the same PostgreSQL database found the tables empty at
        # the same moment and committed first (SQLite's write lock queues the two instead).
        log.info("demo_data.skipped", reason="another process loaded it at the same moment")
        return None
    starts = [item.start for _, item in demo.appointments]
    loaded = DemoLoad(len(demo.profiles), len(demo.appointments), min(starts), max(starts))
    log.info(
        "demo_data.loaded",
        profiles=loaded.profiles,
        appointments=loaded.appointments,
        first=loaded.first.date().isoformat(),
        last=loaded.last.date().isoformat(),
        hint="demo scheduling profiles and appointments for the sandbox's people; "
        "`syncwarden import` adds to them, and an empty database gets them afresh",
    )
    return loaded


async def _load_into_empty_tables(
    sessions: async_sessionmaker[AsyncSession], demo: DemoScheduling
) -> bool:
    """Insert ``demo`` in one transaction if both tables are empty; False (logged) if not."""
    async with write_transaction(sessions) as session:
        profiles = await session.scalar(select(func.count()).select_from(ProfileRecord)) or 0
        booked = await session.scalar(select(func.count()).select_from(AppointmentRecord)) or 0
        if profiles or booked:
            log.info(
                "demo_data.skipped",
                reason="the scheduling tables already hold data (imported, or an earlier load)",
                profiles=profiles,
                appointments=booked,
            )
            return False
        session.add_all(
            ProfileRecord(id=profile.id, name=profile.name, email=profile.email)
            for profile in demo.profiles
        )
        session.add_all(
            AppointmentRecord(
                profile_id=profile_id,
                id=item.id,
                subject=item.subject,
                start_at=item.start,
                end_at=item.end,
                time_zone=item.time_zone,
                all_day=item.all_day,
                location=item.location,
                cancelled=False,
            )
            for profile_id, item in demo.appointments
        )
    return True
