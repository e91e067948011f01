"""The durable outbox: one message per key, delivered once, retried after failures."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db import session_factory
from tests.support.notifier import RecordingNotifier
from tests.support.tickets import sample_ticket
from tests.support.workflow import FakeClock
from workflows import outbox
from workflows.audit import AuditEvent
from workflows.outbox import OutboxDispatcher, OutboxMessage, OutboxNotifier
from workflows.ports import Channel, Notification, NotificationKind, UndeliverableError

TICKET = sample_ticket()
NOTE = Notification(
    NotificationKind.INSTRUCTIONS, TICKET, "Your calendar sync is ready", {"a": "b"}
)


async def test_one_message_per_key_delivered_once(migrated_engine: AsyncEngine) -> None:
    sessions = session_factory(migrated_engine)
    outbox = OutboxNotifier(sessions)
    await outbox.to_user("u-1", NOTE, key="SW-1042:3:send_instructions")
    await outbox.to_user("u-1", NOTE, key="SW-1042:3:send_instructions")
    await outbox.to_channel(Channel.IT, NOTE, key="SW-1042:status:complete")
    await outbox.update_card(TICKET, key="SW-1042:card:5")
    delivery = RecordingNotifier()
    dispatcher = OutboxDispatcher(sessions, delivery)
    assert await dispatcher.dispatch_due() == 3
    assert await dispatcher.dispatch_due() == 0
    assert [s.target for s in delivery.sent] == ["user:u-1", "channel:it", "card"]
    assert delivery.sent[0].key == "SW-1042:3:send_instructions"
    assert delivery.sent[0].text == "Your calendar sync is ready"


async def test_failed_delivery_is_retried_later(migrated_engine: AsyncEngine) -> None:
    sessions = session_factory(migrated_engine)
    clock = FakeClock()
    await OutboxNotifier(sessions, clock=clock).to_user("u-1", NOTE, key="k-1")
    delivery = RecordingNotifier(fail_next=1)
    dispatcher = OutboxDispatcher(sessions, delivery, clock=clock)
    assert await dispatcher.dispatch_due() == 0
    assert await dispatcher.dispatch_due() == 0, "not again before its pause is over"
    clock.advance(seconds=10)
    assert await dispatcher.dispatch_due() == 1
    assert len(delivery.sent) == 1
    async with sessions() as session:
        row = await session.scalar(select(OutboxMessage))
        assert row is not None and (row.state, row.attempts) == ("sent", 2)


async def test_a_send_interrupted_by_a_crash_is_picked_up_again(
    migrated_engine: AsyncEngine,
) -> None:
    sessions = session_factory(migrated_engine)
    clock = FakeClock()
    await OutboxNotifier(sessions, clock=clock).to_user("u-1", NOTE, key="k-2")
    crashed = OutboxDispatcher(sessions, RecordingNotifier(), clock=clock)
    assert await crashed._claim() is not None  # claimed, then the process died
    survivor = OutboxDispatcher(sessions, RecordingNotifier(), clock=clock)
    assert await survivor.dispatch_due() == 0
    clock.advance(minutes=6)
    assert await survivor.dispatch_due() == 1
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(OutboxMessage)) == 1


class RefusingTeams(RecordingNotifier):
    """Teams where one person has blocked the bot (and, if asked, where the IT channel is gone)."""

    def __init__(self, blocked: str, *, it_channel_gone: bool = False) -> None:
        super().__init__()
        self.blocked = blocked
        self.it_channel_gone = it_channel_gone

    async def to_user(self, user_id: str, notification: Notification, *, key: str) -> None:
        if user_id == self.blocked:
            raise UndeliverableError(f"{user_id} has blocked the bot")
        await super().to_user(user_id, notification, key=key)

    async def to_channel(self, channel: Channel, notification: Notification, *, key: str) -> None:
        if self.it_channel_gone:
            raise UndeliverableError("no it channel is set")
        await super().to_channel(channel, notification, key=key)


async def test_a_message_given_up_is_told_to_it_and_recorded_on_its_ticket(
    migrated_engine: AsyncEngine,
) -> None:
    sessions = session_factory(migrated_engine)
    subject = TICKET.subject
    await OutboxNotifier(sessions).to_user(subject.id, NOTE, key="SW-1042:instructions")
    teams = RefusingTeams(subject.id)

    dispatcher = OutboxDispatcher(sessions, teams)
    await dispatcher.dispatch_due()
    await dispatcher.dispatch_due()

    [told] = teams.to("channel:it", NotificationKind.DELIVERY_FAILED)
    assert subject.name in told.text and "instructions" in told.text and "blocked" in told.text
    async with sessions() as session:
        [audit] = (
            await session.scalars(
                select(AuditEvent).where(AuditEvent.action == "notification_undeliverable")
            )
        ).all()
    assert audit.ticket_ref == TICKET.ref and audit.after is not None
    assert audit.after["key"] == "SW-1042:instructions"


async def test_a_message_to_a_missing_it_channel_is_not_reported_to_it_again(
    migrated_engine: AsyncEngine,
) -> None:
    sessions = session_factory(migrated_engine)
    await OutboxNotifier(sessions).to_channel(Channel.IT, NOTE, key="SW-1042:status")
    dispatcher = OutboxDispatcher(sessions, RefusingTeams("nobody", it_channel_gone=True))
    await dispatcher.dispatch_due()
    await dispatcher.dispatch_due()
    async with sessions() as session:
        rows = (await session.scalars(select(OutboxMessage))).all()
    assert [(row.key, row.state) for row in rows] == [("SW-1042:status", "failed")]


class Hangs(RecordingNotifier):
    """A channel that never answers: the delivery must give up inside the row's park."""

    async def to_user(self, user_id: str, notification: Notification, *, key: str) -> None:
        await asyncio.Event().wait()


async def test_a_delivery_that_outlives_its_deadline_is_deferred_before_its_park_ends(
    migrated_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another replica may claim a row once its park is over; the delivery holding it must have
    ended by then, or the message could be sent twice."""
    assert outbox.DELIVERY_DEADLINE_SECONDS < outbox.PARK_SECONDS
    monkeypatch.setattr(outbox, "DELIVERY_DEADLINE_SECONDS", 0.05)
    sessions = session_factory(migrated_engine)
    clock = FakeClock()
    await OutboxNotifier(sessions, clock=clock).to_user("u-1", NOTE, key="k-hang")
    async with asyncio.timeout(30):  # without the deadline this would wait for ever
        assert await OutboxDispatcher(sessions, Hangs(), clock=clock).dispatch_due() == 0
    async with sessions() as session:
        row = await session.scalar(select(OutboxMessage))
    assert row is not None and row.state == "pending"
    assert row.last_error == "delivery took too long"
