"""One sandbox person, the built-in appointment source and the sync engine, as the worker has them.

Shared by the sync engine tests. The engine's clock is a ``SteppedClock`` the test moves by hand,
so a day can pass between two runs without waiting for it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from syncwarden.connectors.graph.calendar import source_id_of
from syncwarden.connectors.scheduling.builtin_appointments import BuiltinAppointments
from syncwarden.connectors.scheduling.ports import Appointment, AppointmentSource
from syncwarden.core.db import session_factory
from syncwarden.core.settings import SyncSettings
from syncwarden.m365 import Microsoft365
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.sync.engine import SyncEngine, SyncOptions, SyncReport
from tests.support.enrollments import enroll

AVERY = "avery.quinlan@example.edu"


class SteppedClock:
    """The engine's clock: real time at the start, moved only by ``advance``."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class World:
    tenant: SandboxTenant
    m365: Microsoft365
    sessions: async_sessionmaker[AsyncSession]
    source: BuiltinAppointments
    engine: SyncEngine
    now: datetime
    clock: SteppedClock
    settings: SyncSettings
    # What the engine reads when not ``source`` itself (which the test writes through).
    reader: AppointmentSource | None = None

    def user_id(self, upn: str) -> str:
        return self.tenant.seed.user_ids[upn]

    async def enroll(self, upn: str = AVERY, profile: str = "P-1") -> int:
        [enrollment] = await enroll(self.sessions, self.tenant, upn, profile)
        return enrollment

    def appointment(self, number: int, *, days: float = 1, **fields: Any) -> Appointment:
        start = self.now.replace(minute=0, second=0, microsecond=0) + timedelta(days=days)
        values: dict[str, Any] = {
            "id": f"A-{number}",
            "subject": f"Client {number}",
            "start": start,
            "end": start + timedelta(minutes=50),
            "time_zone": "Europe/London",
        }
        values.update(fields)
        return Appointment(**values)

    def pushed(self, upn: str = AVERY) -> dict[str, Any]:
        """Our events in the mailbox, by source id."""
        events = self.tenant.state.mailbox_events(self.user_id(upn))
        return {
            sid: event
            for event in events.values()
            if (sid := source_id_of({"singleValueExtendedProperties": event.extended}))
        }

    def pushed_counts(self, upn: str = AVERY) -> Counter[str]:
        """How many of our events each source appointment has in the mailbox (duplicates show)."""
        events = self.tenant.state.mailbox_events(self.user_id(upn))
        return Counter(
            sid
            for event in events.values()
            if (sid := source_id_of({"singleValueExtendedProperties": event.extended}))
        )

    def graph_requests(self) -> list[str]:
        return [
            f"{r.method} {r.path}"
            for r in self.tenant.requests
            if not r.in_batch and not r.path.startswith("/adminapi")
        ]

    def use_settings(self, **fields: Any) -> None:
        """Run the engine with these sync settings from now on."""
        self.settings = SyncSettings(**fields)
        self._build()

    def read_through(self, reader: AppointmentSource) -> None:
        """Let the engine read ``reader`` from now on (the test still writes to ``source``)."""
        self.reader = reader
        self._build()

    def _build(self) -> None:
        self.engine = SyncEngine(
            self.sessions,
            self.m365.calendar,
            self.reader or self.source,
            self.settings,
            clock=self.clock,
        )

    async def sync(self, enrollment_id: int, **options: Any) -> SyncReport:
        return await self.engine.sync(enrollment_id, SyncOptions(**options))


@pytest.fixture
async def world(migrated_engine: AsyncEngine, tenant: SandboxTenant, m365: Microsoft365) -> World:
    sessions = session_factory(migrated_engine)
    source = BuiltinAppointments(sessions)
    settings = SyncSettings(subject_template="{subject}")
    now = datetime.now(UTC)
    clock = SteppedClock(now)
    return World(
        tenant,
        m365,
        sessions,
        source,
        SyncEngine(sessions, m365.calendar, source, settings, clock=clock),
        now,
        clock,
        settings,
    )
