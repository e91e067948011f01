"""Appointments kept in Syncwarden's own database: the built-in source.

Filled by ``syncwarden import appointments`` (CSV or iCalendar) or by an integration writing
through :meth:`BuiltinAppointments.upsert`. Times are stored in UTC beside the zone they were
booked in, so the sync can rebuild the wall-clock time on either side of a DST change.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Boolean, Index, String, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from syncwarden.connectors.scheduling.ports import Appointment, BusyBlock, Window
from syncwarden.core.db import Base, UtcDateTime, utc_now, write_transaction


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


class BuiltinAppointments:
    """An :class:`connectors.scheduling.ports.AppointmentSource` on our own table."""

    name = "builtin"
    accepts_busy = False

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def list_appointments(self, profile_id: str, window: Window) -> Sequence[Appointment]:
        async with self._sessions() as session:
            rows = await session.scalars(
                select(AppointmentRecord)
                .where(
                    AppointmentRecord.profile_id == profile_id,
                    AppointmentRecord.start_at < window.end,
                    AppointmentRecord.end_at > window.start,
                )
                .order_by(AppointmentRecord.start_at, AppointmentRecord.id)
            )
            return [_appointment(row) for row in rows]

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


def _appointment(row: AppointmentRecord) -> Appointment:
    return Appointment(
        id=row.id,
        subject=row.subject,
        start=row.start_at,
        end=row.end_at,
        time_zone=row.time_zone,
        all_day=row.all_day,
        location=row.location,
        updated_at=row.updated_at,
        cancelled=row.cancelled,
    )
