"""Appointments kept in Syncwarden's own database: the built-in source.

Filled by ``syncwarden import appointments`` (CSV or iCalendar) or by an integration writing
through :meth:`BuiltinAppointments.upsert`. Times are stored in UTC beside the zone they were
booked in, so the sync can rebuild the wall-clock time on either side of a DST change.

Every write to the appointment table, whoever makes it (this module, an import, the demo data,
an integration's own SQL), moves the profile's revision in ``scheduling_appointment_changes``:
database triggers do it in the writer's transaction (migration 0024), since a count kept here
would miss any writer that does not come through this class. That revision is the source's
change marker (:class:`connectors.scheduling.ports.ChangeMarkers`), which lets the sync skip
reading a quiet person's appointments.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import BigInteger, Boolean, Index, String, Table, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from syncwarden.connectors.scheduling.ports import Appointment, BusyBlock, Window
from syncwarden.core.db import (
    Base,
    UtcDateTime,
    outside_transaction,
    utc_now,
    write_transaction,
)


class AppointmentRecord(Base):
    __tablename__ = "scheduling_appointments"

    profile_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    id: Mapped[str] = mapped_column(String(256), primary_key=True)
    subject: Mapped[str] = mapped_column(String(512), default="")
    start_at: Mapped[datetime] = mapped_column(UtcDateTime)
    end_at: Mapped[datetime] = mapped_column(UtcDateTime)
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC")
    all_day: Mapped[bool] = mapped_column(Boolean, default=False)
    location: Mapped[str | None] = mapped_column(String(512))
    cancelled: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now, onupdate=utc_now)

    __table_args__ = (Index("ix_scheduling_appointments_profile_start", "profile_id", "start_at"),)


class AppointmentChangeRecord(Base):
    """How many times a profile's appointments were written; only the triggers write it.

    A row is never deleted, so a revision is never handed out twice for the same profile: a
    profile without a row (nothing written since migration 0024) is revision 0, and the
    triggers' first write makes it 1.
    """

    __tablename__ = "scheduling_appointment_changes"

    profile_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger, default=0)


_CHANGES = cast(Table, AppointmentChangeRecord.__table__)
_REVISIONS = select(_CHANGES.c.profile_id, _CHANGES.c.revision).where(
    _CHANGES.c.profile_id.in_(bindparam("profile_ids", expanding=True))
)

# One Core statement (no ORM loading), built once, reading only the columns an Appointment holds.
_APPOINTMENTS = cast(Table, AppointmentRecord.__table__)
_IN_WINDOW = (
    select(
        _APPOINTMENTS.c.id,
        _APPOINTMENTS.c.subject,
        _APPOINTMENTS.c.start_at,
        _APPOINTMENTS.c.end_at,
        _APPOINTMENTS.c.time_zone,
        _APPOINTMENTS.c.all_day,
        _APPOINTMENTS.c.location,
        _APPOINTMENTS.c.updated_at,
        _APPOINTMENTS.c.cancelled,
    )
    .where(
        _APPOINTMENTS.c.profile_id == bindparam("profile_id"),
        _APPOINTMENTS.c.start_at < bindparam("window_end"),
        _APPOINTMENTS.c.end_at > bindparam("window_start"),
    )
    .order_by(_APPOINTMENTS.c.start_at, _APPOINTMENTS.c.id)
)


class BuiltinAppointments:
    """An :class:`connectors.scheduling.ports.AppointmentSource` on our own table."""

    name = "builtin"
    accepts_busy = False

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def list_appointments(self, profile_id: str, window: Window) -> Sequence[Appointment]:
        """The profile's appointments overlapping ``window``, as plain rows: a quiet sync reads
        them for every person on every pass, and building an ORM object per row cost more
        than the rest of such a run."""
        async with self._sessions() as session:
            await outside_transaction(session)
            rows = await session.execute(
                _IN_WINDOW,
                {"profile_id": profile_id, "window_start": window.start, "window_end": window.end},
            )
            return [
                Appointment(
                    id=id_,
                    subject=subject,
                    start=start,
                    end=end,
                    time_zone=zone,
                    all_day=all_day,
                    location=location,
                    updated_at=updated,
                    cancelled=cancelled,
                )
                for id_, subject, start, end, zone, all_day, location, updated, cancelled in rows
            ]

    async def change_markers(self, profile_ids: Collection[str]) -> dict[str, str]:
        """Each profile's revision, for many profiles in one statement (see the module)."""
        wanted = list(dict.fromkeys(profile_ids))
        markers = dict.fromkeys(wanted, "0")
        if not wanted:
            return markers
        async with self._sessions() as session:
            await outside_transaction(session)
            rows = await session.execute(_REVISIONS, {"profile_ids": wanted})
            markers.update((profile_id, str(revision)) for profile_id, revision in rows)
        return markers

    async def write_busy(self, profile_id: str, blocks: Sequence[BusyBlock]) -> None:
        """Nothing to write: the engine's own busy-block table is the built-in system's view."""

    async def upsert(self, profile_id: str, appointments: Sequence[Appointment]) -> tuple[int, int]:
        """Create or replace appointments by id; returns (created, updated)."""
        created = updated = 0
        async with write_transaction(self._sessions) as session:
            for item in appointments:
                record = await session.get(AppointmentRecord, (profile_id, item.id))
                if record is None:
                    record = AppointmentRecord(profile_id=profile_id, id=item.id)
                    session.add(record)
                    created += 1
                else:
                    updated += 1
                record.subject = item.subject
                record.start_at = item.start
                record.end_at = item.end
                record.time_zone = item.time_zone
                record.all_day = item.all_day
                record.location = item.location
                record.cancelled = item.cancelled
                record.updated_at = item.updated_at or utc_now()
        return created, updated

    async def cancel_missing(self, profile_id: str, window: Window, keep: set[str]) -> int:
        """Cancel the profile's appointments in ``window`` that a full export no longer lists."""
        cancelled = 0
        async with write_transaction(self._sessions) as session:
            rows = await session.scalars(
                select(AppointmentRecord).where(
                    AppointmentRecord.profile_id == profile_id,
                    AppointmentRecord.start_at < window.end,
                    AppointmentRecord.end_at > window.start,
                    AppointmentRecord.cancelled.is_(False),
                )
            )
            for record in rows:
                if record.id not in keep:
                    record.cancelled = True
                    cancelled += 1
        return cancelled

    async def delete(self, profile_id: str, appointment_id: str) -> bool:
        async with write_transaction(self._sessions) as session:
            record = await session.get(AppointmentRecord, (profile_id, appointment_id))
            if record is None:
                return False
            await session.delete(record)
            return True
