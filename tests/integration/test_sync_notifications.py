"""Graph change notifications end to end: the sandbox posts to our real HTTP endpoint, the mailbox
is queued for a sync, and the worker's next requested run pulls the change."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from syncwarden.core.db import session_factory, write_transaction
from syncwarden.core.settings import Settings, SyncSettings
from syncwarden.m365 import Microsoft365
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.sync.records import BusyBlockRecord, SyncState
from syncwarden.sync.subscriptions import SubscriptionRecord
from syncwarden.web import create_app
from syncwarden.workflow_wiring import CalendarSync, build_calendar_sync
from syncwarden.workflows.records import Enrollment
from tests.support.enrollments import enroll
from tests.support.m365 import sandbox_settings
from tests.support.notifier import RecordingNotifier, recording_units
from tests.support.outlook import add_own_event

AVERY = "avery.quinlan@example.edu"
WebClient = TestClient[web.Request, web.Application]


@dataclass
class Setup:
    sync: CalendarSync
    client: WebClient
    sessions: async_sessionmaker[AsyncSession]
    enrollment: int
    kicks: list[str]


def free_port() -> int:
    """A port nobody listens on, so the URL can be known before the server starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def setup(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, m365: Microsoft365
) -> AsyncIterator[Setup]:
    sessions = session_factory(migrated_engine)
    [enrollment] = await enroll(sessions, tenant, AVERY)
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/graph/notifications"
    settings = sandbox_settings(tenant, sync=SyncSettings(notification_url=url).model_dump())
    sync = build_calendar_sync(settings, recording_units(sessions, RecordingNotifier()), m365)
    kicks: list[str] = []
    sync.subscriptions.on_requested = lambda: kicks.append("sync.requested")
    app = create_app(Settings(), migrated_engine, notifications=sync.subscriptions)
    client: WebClient = TestClient(TestServer(app, host="127.0.0.1", port=port))
    await client.start_server()
    try:
        yield Setup(sync, client, sessions, enrollment, kicks)
    finally:
        await client.close()


async def test_a_change_in_outlook_reaches_the_sync_through_a_notification(
    setup: Setup, tenant: SandboxTenant, m365: Microsoft365
) -> None:
    await setup.sync.worker.run_all()  # the first sync, before any subscription
    maintained = await setup.sync.subscriptions.maintain()
    assert maintained.created == 1 and maintained.failed == 0
    async with setup.sessions() as session:
        [record] = (await session.scalars(select(SubscriptionRecord))).all()
    assert record.mailbox_id == tenant.seed.user_ids[AVERY]
    assert len(record.client_state_hash) == 64  # only a hash of the secret is kept

    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=5)
    event_id = await add_own_event(m365, record.mailbox_id, start)
    await tenant.drain_notifications()

    delivered = [d for d in tenant.subscriptions.deliveries if "notifications" in d.url]
    assert delivered and all(d.status == 202 for d in delivered)
    assert setup.kicks == ["sync.requested"] * len(delivered)
    async with setup.sessions() as session:
        state = await session.get(SyncState, setup.enrollment)
        assert state is not None and state.requested_at is not None
    [report] = await setup.sync.worker.run_requested()
    assert report.ok and not report.full_resync
    async with setup.sessions() as session:
        blocks = (await session.scalars(select(BusyBlockRecord.event_id))).all()
    assert event_id in blocks


async def test_forged_state_unknown_subscriptions_and_bad_bodies_queue_nothing(
    setup: Setup,
) -> None:
    await setup.sync.subscriptions.maintain()
    async with setup.sessions() as session:
        [record] = (await session.scalars(select(SubscriptionRecord))).all()
    forged = {
        "value": [
            {"subscriptionId": record.subscription_id, "clientState": "guess"},
            {"subscriptionId": "unknown", "clientState": "guess"},
        ]
    }

    answered = await setup.client.post("/api/graph/notifications", json=forged)
    assert answered.status == 202
    not_json = await setup.client.post("/api/graph/notifications", data=b"{oops")
    assert not_json.status == 400
    handshake = await setup.client.post(
        "/api/graph/notifications", params={"validationToken": "echo me"}
    )
    assert (handshake.status, await handshake.text()) == (200, "echo me")

    async with setup.sessions() as session:
        state = await session.get(SyncState, setup.enrollment)
    assert state is None or state.requested_at is None
    assert setup.kicks == []


async def test_lifecycle_events_renew_recreate_and_resync(
    setup: Setup, tenant: SandboxTenant
) -> None:
    await setup.sync.subscriptions.maintain()
    async with setup.sessions() as session:
        [record] = (await session.scalars(select(SubscriptionRecord))).all()
    old_expiry = record.expires_at

    tenant.send_lifecycle_event(record.subscription_id, "reauthorizationRequired")
    await tenant.drain_notifications()
    async with setup.sessions() as session:
        renewed = await session.get(SubscriptionRecord, record.mailbox_id)
    assert renewed is not None and renewed.expires_at >= old_expiry

    tenant.send_lifecycle_event(record.subscription_id, "subscriptionRemoved")
    await tenant.drain_notifications()
    async with setup.sessions() as session:
        assert await session.get(SubscriptionRecord, record.mailbox_id) is None
        state = await session.get(SyncState, setup.enrollment)
        assert state is not None and state.requested_at is not None  # changes may be missed
    again = await setup.sync.subscriptions.maintain()
    assert again.created == 1


async def test_subscriptions_follow_enrollments_and_renew_before_they_end(
    setup: Setup, tenant: SandboxTenant
) -> None:
    await setup.sync.subscriptions.maintain()
    async with write_transaction(setup.sessions) as session:
        record = (await session.scalars(select(SubscriptionRecord))).one()
        record.expires_at = datetime.now(UTC) + timedelta(hours=1)
    renewed = await setup.sync.subscriptions.maintain()
    assert renewed.renewed == 1

    async with write_transaction(setup.sessions) as session:
        enrollment = await session.get(Enrollment, setup.enrollment)
        assert enrollment is not None
        enrollment.active = False
    removed = await setup.sync.subscriptions.maintain()
    assert removed.removed == 1
    assert tenant.subscriptions.subscriptions == {}


@pytest.mark.parametrize("graph_limit_minutes", [10070, 4230])
async def test_subscriptions_ask_within_graphs_limit_and_keep_the_granted_expiry(
    setup: Setup, tenant: SandboxTenant, graph_limit_minutes: int
) -> None:
    """Graph refuses a longer lifetime instead of shortening it: today's limit and the older one."""
    tenant.subscriptions.max_minutes = graph_limit_minutes
    created = await setup.sync.subscriptions.maintain()
    assert (created.created, created.failed) == (1, 0)
    [granted] = tenant.subscriptions.subscriptions.values()
    async with setup.sessions() as session:
        record = (await session.scalars(select(SubscriptionRecord))).one()
    assert abs(record.expires_at - granted.expiration) < timedelta(seconds=1)
    assert granted.expiration - datetime.now(UTC) < timedelta(minutes=graph_limit_minutes)

    async with write_transaction(setup.sessions) as session:
        ending = (await session.scalars(select(SubscriptionRecord))).one()
        ending.expires_at = datetime.now(UTC) + timedelta(hours=1)
    renewed = await setup.sync.subscriptions.maintain()
    assert (renewed.renewed, renewed.failed) == (1, 0)
    async with setup.sessions() as session:
        record = (await session.scalars(select(SubscriptionRecord))).one()
    assert abs(record.expires_at - granted.expiration) < timedelta(seconds=1)
    assert record.expires_at > datetime.now(UTC) + timedelta(days=2)


async def test_malformed_posts_are_refused_with_400_and_queue_nothing(setup: Setup) -> None:
    """Nesting deep enough to break a recursive parser, a Content-Encoding the body does not
    have, and ids that are not text Graph would send: a 4xx or an ignored item, never a 500."""
    deep = await setup.client.post(
        "/api/graph/notifications",
        data=b"[" * 100_000 + b"]" * 100_000,
        headers={"Content-Type": "application/json"},
    )
    assert deep.status == 400 and "nested deeper" in (await deep.json())["error"]
    mislabelled = await setup.client.post(
        "/api/graph/notifications",
        data=b'{"value": []}',
        headers={
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "Connection": "close",
        },
    )
    assert mislabelled.status == 400
    odd = {
        "value": [
            {"subscriptionId": "\ud800", "clientState": "x"},
            {"subscriptionId": "a" * 10_000, "clientState": "\udfff"},
            {"subscriptionId": 7, "clientState": None},
        ]
    }
    body = json.dumps(odd).encode()  # lone surrogates survive as \\u escapes, as an attacker sends
    answered = await setup.client.post(
        "/api/graph/notifications", data=body, headers={"Content-Type": "application/json"}
    )
    assert answered.status == 202
    async with setup.sessions() as session:
        state = await session.get(SyncState, setup.enrollment)
    assert state is None or state.requested_at is None
    assert setup.kicks == []


async def test_a_subscription_whose_create_answer_was_lost_is_not_left_at_graph(
    setup: Setup, tenant: SandboxTenant, m365: Microsoft365
) -> None:
    """Graph made it, we never recorded it (a timeout or a crash before the commit): the next
    pass deletes what Graph holds for our URL that we do not know, so one remains per mailbox."""
    url = str(setup.client.make_url("/api/graph/notifications"))
    mailbox = tenant.seed.user_ids[AVERY]
    lost = await m365.subscriptions.create(
        resource=f"/users/{mailbox}/events",
        notification_url=url,
        client_state="a-secret-nobody-kept",
        expires_at=datetime.now(UTC) + timedelta(days=2),
    )

    maintained = await setup.sync.subscriptions.maintain()

    assert (maintained.orphans_removed, maintained.created) == (1, 1)
    held = await m365.subscriptions.list_all()
    assert [s.resource.lstrip("/") for s in held] == [f"users/{mailbox}/events"]
    assert lost.id not in {s.id for s in held}
    again = await setup.sync.subscriptions.maintain()
    assert (again.orphans_removed, again.created) == (0, 0)
