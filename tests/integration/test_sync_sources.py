"""The ics and sql appointment sources, each feeding the real engine against the sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.connectors.scheduling.builtin_appointments import BuiltinAppointments
from syncwarden.connectors.scheduling.ics_source import IcsFeedSource
from syncwarden.connectors.scheduling.ports import Window
from syncwarden.connectors.scheduling.sql_source import SqlSource
from syncwarden.core.db import create_engine, session_factory
from syncwarden.core.settings import SyncSettings
from syncwarden.m365 import Microsoft365
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.sync.engine import SyncEngine
from syncwarden.sync.errors import FailureKind
from syncwarden.workflow_wiring import appointment_source
from tests.support.enrollments import enroll
from tests.support.m365 import sandbox_settings

AVERY = "avery.quinlan@example.edu"


def weekly_feed(first: datetime) -> bytes:
    stamp = first.strftime("%Y%m%dT%H%M%S")
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//example.edu//feed//EN\r\n"
        "BEGIN:VEVENT\r\nUID:clinic\r\n"
        f"DTSTART;TZID=Europe/London:{stamp}\r\nDURATION:PT1H\r\n"
        "RRULE:FREQ=WEEKLY;COUNT=4\r\nSUMMARY:Clinic\r\nEND:VEVENT\r\n"
        "END:VCALENDAR\r\n"
    ).encode()


@dataclass
class Feed:
    body: bytes
    status: int = 200
    conditional: list[bool] = field(default_factory=list)
    served: list[int] = field(default_factory=list)


@pytest.fixture
async def feed_server() -> AsyncIterator[tuple[TestServer, Feed]]:
    first = datetime.now(UTC).replace(hour=9, minute=0, second=0, microsecond=0)
    feed = Feed(weekly_feed(first + timedelta(days=1)))

    async def serve(request: web.Request) -> web.Response:
        etag = f'"{hash(feed.body) & 0xFFFFFFFF:x}"'
        feed.conditional.append("If-None-Match" in request.headers)
        if feed.status != 200:
            feed.served.append(feed.status)
            return web.Response(status=feed.status)
        if request.headers.get("If-None-Match") == etag:
            feed.served.append(304)
            return web.Response(status=304, headers={"ETag": etag})
        feed.served.append(200)
        return web.Response(body=feed.body, headers={"ETag": etag}, content_type="text/calendar")

    app = web.Application()
    app.router.add_get("/feeds/{profile}.ics", serve)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server, feed
    await server.close()


async def test_an_ics_feed_is_expanded_pushed_and_fetched_conditionally(
    migrated_engine: AsyncEngine,
    tenant: SandboxTenant,
    m365: Microsoft365,
    feed_server: tuple[TestServer, Feed],
) -> None:
    server, feed = feed_server
    sessions = session_factory(migrated_engine)
    [enrollment] = await enroll(sessions, tenant, AVERY, "P-avery")
    settings = sandbox_settings(
        tenant,
        sync={
            "source": "ics",
            "ics_url_template": f"http://127.0.0.1:{server.port}/feeds/{{profile_id}}.ics",
        },
    )
    source, closers = appointment_source(settings, BuiltinAppointments(sessions), sessions)
    assert isinstance(source, IcsFeedSource)
    engine = SyncEngine(sessions, m365.calendar, source, settings.sync)
    try:
        first = await engine.sync(enrollment)
        second = await engine.sync(enrollment)
        feed.status = 503
        down = await engine.sync(enrollment)
    finally:
        for close in closers:
            await close()

    assert first.ok and first.created == 4  # four weekly occurrences, as single events
    assert second.ok and second.writes == 0
    assert feed.served == [200, 304, 503]
    assert feed.conditional == [False, True, True]
    assert not down.ok and down.error_kind is FailureKind.SOURCE_UNREACHABLE
    assert "profile P-avery" in (down.error or "") and "feeds/" not in (down.error or "")


async def test_a_sql_source_binds_its_parameters_and_maps_columns(
    migrated_engine: AsyncEngine, database_url: str, tenant: SandboxTenant, m365: Microsoft365
) -> None:
    scheduling_db = create_engine(database_url)  # stands in for the vendor's database
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    async with scheduling_db.begin() as connection:
        await connection.execute(
            text(
                "CREATE TABLE visits (visit_no VARCHAR(20), counsellor VARCHAR(20), "
                "title VARCHAR(80), starts_at VARCHAR(40), ends_at VARCHAR(40))"
            )
        )
        for number, who in ((1, "P-avery"), (2, "P-avery"), (3, "P-other")):
            await connection.execute(
                text("INSERT INTO visits VALUES (:n, :who, :title, :s, :e)"),
                {
                    "n": f"V-{number}",
                    "who": who,
                    "title": f"Visit {number}",
                    "s": (start + timedelta(hours=number)).isoformat(),
                    "e": (start + timedelta(hours=number, minutes=30)).isoformat(),
                },
            )
    source = SqlSource(
        scheduling_db,
        "SELECT visit_no, title, starts_at, ends_at FROM visits WHERE counsellor = :profile_id",
        columns={"id": "visit_no", "subject": "title", "start": "starts_at", "end": "ends_at"},
    )
    window = Window(start - timedelta(days=1), start + timedelta(days=1))
    try:
        read = await source.list_appointments("P-avery", window)
        injected = await source.list_appointments("x' OR '1'='1", window)
        sessions = session_factory(migrated_engine)
        [enrollment] = await enroll(sessions, tenant, AVERY, "P-avery")
        report = await SyncEngine(sessions, m365.calendar, source, SyncSettings()).sync(enrollment)
    finally:
        await scheduling_db.dispose()

    assert sorted(a.id for a in read) == ["V-1", "V-2"]
    assert read[0].start.tzinfo is not None
    assert injected == []  # the profile id is a bound parameter, never SQL
    assert report.ok and report.created == 2


async def test_a_sql_source_that_cannot_be_read_changes_nothing(
    migrated_engine: AsyncEngine, tmp_path: Path, tenant: SandboxTenant, m365: Microsoft365
) -> None:
    broken = create_engine(f"sqlite+aiosqlite:///{tmp_path}/vendor.db")
    source = SqlSource(broken, "SELECT * FROM no_such_table WHERE p = :profile_id")
    sessions = session_factory(migrated_engine)
    [enrollment] = await enroll(sessions, tenant, AVERY, "P-avery")
    try:
        report = await SyncEngine(sessions, m365.calendar, source, SyncSettings()).sync(enrollment)
    finally:
        await broken.dispose()
    assert report.error_kind is FailureKind.SOURCE_UNREACHABLE
    assert "profile P-avery" in (report.error or "")
