"""The interface every scheduling-system adapter implements.

A *profile* is a person's record in the scheduling system; a *mapping* ties that profile to the
mailbox its appointments are synced into, and is what the vendor's "users to sync" list holds.
Adapters that cannot write mappings through an API (a vendor console with no API) say so with
``writes_mappings = False``; the workflow then turns the step into a manual task for IT.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Profile:
    id: str
    name: str
    email: str | None


@dataclass(frozen=True)
class Mapping:
    profile_id: str
    mailbox: str
    active: bool


class SchedulingSystem(Protocol):
    name: str
    writes_mappings: bool

    async def find_profiles(
        self, *, email: str | None = None, name: str | None = None
    ) -> Sequence[Profile]:
        """Profiles whose email matches exactly (any case), else whose name contains ``name``."""
        ...

    async def upsert_mapping(self, profile_id: str, mailbox: str) -> Mapping:
        """Map the profile to the mailbox and mark it active; repeating it changes nothing."""
        ...

    async def deactivate_mapping(self, profile_id: str) -> Mapping | None:
        """Mark the profile's mapping inactive; None when it had none. Repeating it is harmless."""
        ...

    async def list_mappings(self) -> Sequence[Mapping]: ...


@dataclass(frozen=True)
class Window:
    """A half-open span of time ``[start, end)`` in UTC-aware datetimes."""

    start: datetime
    end: datetime

    def overlaps(self, start: datetime, end: datetime) -> bool:
        return start < self.end and end > self.start


@dataclass(frozen=True)
class Appointment:
    """One appointment as the scheduling system knows it, already expanded to a single instance.

    Times are timezone-aware; ``time_zone`` is the IANA zone the appointment was booked in, kept
    so that wall-clock times survive DST. An all-day appointment spans whole dates: ``start`` is
    local midnight of its first day and ``end`` local midnight after its last (exclusive).
    """

    id: str
    subject: str
    start: datetime
    end: datetime
    time_zone: str = "UTC"
    all_day: bool = False
    location: str | None = None
    updated_at: datetime | None = None
    cancelled: bool = False


@dataclass(frozen=True)
class BusyBlock:
    """Time the person is busy in Outlook: when and how busy, never what."""

    start: datetime
    end: datetime
    show_as: str = "busy"


class AppointmentSource(Protocol):
    """Where appointments come from; ``write_busy`` only where the system can take busy time."""

    name: str
    accepts_busy: bool

    async def list_appointments(self, profile_id: str, window: Window) -> Sequence[Appointment]:
        """Every appointment of the profile overlapping ``window``, cancelled ones included.

        Raises :class:`connectors.errors.SourceUnavailableError` when the system cannot be read;
        an empty list means the profile really has no appointments.
        """
        ...

    async def write_busy(self, profile_id: str, blocks: Sequence[BusyBlock]) -> None:
        """Replace the profile's busy time with ``blocks``."""
        ...


@runtime_checkable
class ChangeMarkers(Protocol):
    """A source that can tell, without reading appointments, that a profile's have not changed.

    Optional: the engine asks a source that has it before reading, and a quiet person then costs
    no appointment rows. A source without it is read and fingerprinted on every run instead.
    """

    async def change_markers(self, profile_ids: Collection[str]) -> dict[str, str]:
        """An opaque token per profile (every one asked for) that is never handed out again once
        any of the profile's appointments is added, changed or deleted, by whatever writer.

        So a token read *before* :meth:`AppointmentSource.list_appointments` vouches for what
        that read returned for as long as the same token comes back. Raises
        :class:`connectors.errors.SourceUnavailableError` when the system cannot be read.
        """
        ...
