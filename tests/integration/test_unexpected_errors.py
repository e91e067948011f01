"""Every unexpected exception is logged with its stack trace and counted where operators look.

Expected failures (a channel that did not take a message this time) stay warnings; a bug does
not hide behind a one-line log. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator, Sequence

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.connectors.scheduling.ports import Appointment, BusyBlock, Window
from syncwarden.core.db import session_factory
from syncwarden.core.failures import unexpected_counts
from syncwarden.core.logging import configure_logging
from syncwarden.core.settings import Settings, SyncSettings
from syncwarden.m365 import Microsoft365
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.sync.engine import SyncEngine
from syncwarden.sync.worker import SyncWorker
from syncwarden.web import create_app
from syncwarden.workflows.outbox import OutboxNotifier
from syncwarden.workflows.outbox_dispatch import OutboxDispatcher
from syncwarden.workflows.ports import (
    DeliveryDeferredError,
    Notification,
    NotificationKind,
    TicketView,
)
from tests.support.enrollments import enroll
from tests.support.notifier import RecordingNotifier
from tests.support.tickets import sample_ticket

SANDBOX = Settings.model_validate({"mode": "sandbox"})
NOTE = Notification(NotificationKind.INSTRUCTIONS, sample_ticket(), "Your calendar sync is ready")


class LogStream(io.StringIO):
    """Captured log lines; a test can wait for an event to be written, without polling."""

    def __init__(self) -> None:
        super().__init__()
        self._written = asyncio.Event()

    def write(self, text: str) -> int:
        self._written.set()
        return super().write(text)

    async def seen(self, event: str) -> None:
        while f'"event": "{event}"' not in self.getvalue():
            self._written.clear()
            await self._written.wait()


@pytest.fixture
def log_output() -> Iterator[LogStream]:
    stream = LogStream()
    configure_logging(
        Settings.model_validate({"mode": "sandbox", "log": {"format": "json"}}), stream=stream
    )
    yield stream
    configure_logging(SANDBOX)


class BrokenSource:
    """An appointment source with a bug in it."""

    name = "broken"
    accepts_busy = False

    async def list_appointments(self, profile_id: str, window: Window) -> Sequence[Appointment]:
        raise KeyError("start")

    async def write_busy(self, profile_id: str, blocks: Sequence[BusyBlock]) -> None:
        return None


async def test_a_crashed_sync_run_is_logged_with_its_traceback_and_counted(
    migrated_engine: AsyncEngine,
    tenant: SandboxTenant,
    m365: Microsoft365,
    log_output: LogStream,
) -> None:
    sessions = session_factory(migrated_engine)
    [enrollment] = await enroll(sessions, tenant, "avery.quinlan@example.edu")
    settings = SyncSettings()
    worker = SyncWorker(
        sessions, SyncEngine(sessions, m365.calendar, BrokenSource(), settings), settings
    )
    before = unexpected_counts().get("sync.run", 0)

    await worker.request([enrollment])
    [report] = await worker.run_requested()

    assert not report.ok
    assert unexpected_counts().get("sync.run", 0) == before + 1
    logged = log_output.getvalue()
    assert '"event": "sync.run_crashed"' in logged
    assert "Traceback (most recent call last)" in logged and "KeyError: 'start'" in logged


class FlakyTeams(RecordingNotifier):
    """Teams that answers one send with a bug and one with an ordinary refusal to take it now."""

    def __init__(self, failure: Exception) -> None:
        super().__init__()
        self.failure: Exception | None = failure

    async def to_user(self, user_id: str, notification: Notification, *, key: str) -> None:
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure
        await super().to_user(user_id, notification, key=key)

    async def update_card(self, ticket: TicketView, *, key: str) -> None:
        await super().update_card(ticket, key=key)


@pytest.mark.parametrize(
    ("failure", "counted"),
    [
        (AttributeError("'NoneType' object has no attribute 'id'"), 1),
        (DeliveryDeferredError("busy"), 0),
    ],
    ids=["a bug", "teams busy"],
)
async def test_only_an_unexpected_delivery_failure_is_counted(
    migrated_engine: AsyncEngine, log_output: LogStream, failure: Exception, counted: int
) -> None:
    sessions = session_factory(migrated_engine)
    await OutboxNotifier(sessions).to_user("u-1", NOTE, key="k-unexpected")
    before = unexpected_counts().get("outbox.deliver", 0)

    assert await OutboxDispatcher(sessions, FlakyTeams(failure)).dispatch_due() == 0

    assert unexpected_counts().get("outbox.deliver", 0) == before + counted
    assert ("Traceback (most recent call last)" in log_output.getvalue()) == bool(counted)


async def test_metrics_export_the_unexpected_error_count(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, m365: Microsoft365
) -> None:
    sessions = session_factory(migrated_engine)
    [enrollment] = await enroll(sessions, tenant, "avery.quinlan@example.edu")
    settings = SyncSettings()
    worker = SyncWorker(
        sessions, SyncEngine(sessions, m365.calendar, BrokenSource(), settings), settings
    )
    await worker.request([enrollment])
    await worker.run_requested()
    client: TestClient[web.Request, web.Application] = TestClient(
        TestServer(create_app(SANDBOX, migrated_engine), host="127.0.0.1")
    )
    await client.start_server()
    try:
        body = await (await client.get("/metrics")).text()
    finally:
        await client.close()
    count = unexpected_counts()["sync.run"]
    assert f'syncwarden_unexpected_errors_total{{where="sync.run"}} {float(count)}' in body


async def test_a_client_that_hangs_up_mid_upload_is_not_an_error(
    migrated_engine: AsyncEngine, log_output: LogStream
) -> None:
    """Aborted uploads are the client's business: one info line, no ERROR and no traceback."""
    runner = web.AppRunner(create_app(SANDBOX, migrated_engine))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /api/messages HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"type": "mess'
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        async with asyncio.timeout(10):
            await log_output.seen("http.client_gone")
    finally:
        await runner.cleanup()
    logged = log_output.getvalue()
    assert '"level": "error"' not in logged and "Traceback" not in logged
