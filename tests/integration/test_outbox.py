"""The durable outbox: one message per key, delivered once, retried after failures."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db import session_factory
from tests.support.notifier import RecordingNotifier
from tests.support.tickets import sample_ticket
from tests.support.workflow import FakeClock
from workflows.outbox import OutboxDispatcher, OutboxMessage, OutboxNotifier
from workflows.ports import Channel, Notification, NotificationKind

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
