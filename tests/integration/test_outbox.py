"""The durable outbox: one message per key, delivered once, retried after failures."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.core.db import session_factory, write_transaction
from syncwarden.workflows import outbox_dispatch as outbox
from syncwarden.workflows.audit import AuditEvent
from syncwarden.workflows.outbox import OutboxMessage, OutboxNotifier
from syncwarden.workflows.outbox_dispatch import OutboxDispatcher
from syncwarden.workflows.ports import Channel, Notification, NotificationKind, UndeliverableError
from tests.support.notifier import RecordingNotifier
from tests.support.tickets import sample_ticket
from tests.support.workflow import FakeClock

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
    assert await crashed._claim(1, busy=()) != []  # claimed, then the process died
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
    """A channel that never answers: the delivery must give up before its claim runs out."""

    def __init__(self) -> None:
        super().__init__()
        self.called = asyncio.Event()

    async def to_user(self, user_id: str, notification: Notification, *, key: str) -> None:
        self.called.set()
        await asyncio.Event().wait()


async def test_a_delivery_whose_claim_is_not_renewed_stops_before_the_claim_ends(
    migrated_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another replica may claim a row once its claim is over; the delivery holding it must have
    ended by then, or the message could be sent twice."""
    assert outbox.CLAIM_RENEW_SECONDS < outbox.CLAIM_HOLD_SECONDS < outbox.CLAIM_SECONDS
    monkeypatch.setattr(outbox, "CLAIM_HOLD_SECONDS", 0.05)
    monkeypatch.setattr(outbox, "CLAIM_RENEW_SECONDS", 3600.0)  # the renewal never comes
    sessions = session_factory(migrated_engine)
    clock = FakeClock()
    await OutboxNotifier(sessions, clock=clock).to_user("u-1", NOTE, key="k-hang")
    async with asyncio.timeout(30):  # without the deadline this would wait for ever
        assert await OutboxDispatcher(sessions, Hangs(), clock=clock).dispatch_due() == 0
    async with sessions() as session:
        row = await session.scalar(select(OutboxMessage))
    assert row is not None and row.state == "pending"
    assert row.last_error == "delivery took too long"


class SlowTeams(RecordingNotifier):
    """A delivery that lasts longer than a claim: the clock moves past the first claim's end
    while it runs, and another dispatcher looks for due rows in the middle of it."""

    def __init__(self, clock: FakeClock, renewed: asyncio.Queue[int], rival: OutboxDispatcher):
        super().__init__()
        self._clock = clock
        self._renewed = renewed
        self._rival = rival
        self.rival_sent: list[int] = []

    async def to_user(self, user_id: str, notification: Notification, *, key: str) -> None:
        for _ in range(2):
            self._clock.advance(seconds=outbox.CLAIM_SECONDS * 0.8)
            await self._renewed.get()
        self.rival_sent.append(await self._rival.dispatch_due())
        await super().to_user(user_id, notification, key=key)


async def test_a_long_delivery_keeps_its_claim_and_a_killed_ones_claim_runs_out(
    migrated_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delivery renews its claim while it lasts, so nobody else takes the row meanwhile; a
    dispatcher killed mid-send renews nothing, and its row is due again a claim later (a
    minute), not after a long park."""
    monkeypatch.setattr(outbox, "CLAIM_RENEW_SECONDS", 0.001)
    sessions = session_factory(migrated_engine)
    clock = FakeClock()
    await OutboxNotifier(sessions, clock=clock).to_user("u-1", NOTE, key="k-slow")
    renewed: asyncio.Queue[int] = asyncio.Queue()
    rival_teams = RecordingNotifier()
    rival = OutboxDispatcher(sessions, rival_teams, clock=clock)
    slow = SlowTeams(clock, renewed, rival)
    dispatcher = OutboxDispatcher(sessions, slow, clock=clock, on_claim_renewed=renewed.put_nowait)
    async with asyncio.timeout(30):
        assert await dispatcher.dispatch_due() == 1
    assert slow.rival_sent == [0] and rival_teams.sent == [], "the row was still claimed"
    assert [s.key for s in slow.sent] == ["k-slow"]

    await OutboxNotifier(sessions, clock=clock).to_user("u-1", NOTE, key="k-killed")
    # A process killed outright mid-send: its claim was taken, then nothing (no renewal, no
    # record, no hand-back; cancelling a task would hand the row back, as a stop does).
    assert await OutboxDispatcher(sessions, Hangs(), clock=clock)._claim(1, busy=()) != []
    assert await rival.dispatch_due() == 0, "claimed until the claim runs out"
    clock.advance(seconds=outbox.CLAIM_SECONDS + 1)
    assert await rival.dispatch_due() == 1
    assert [s.key for s in rival_teams.sent] == ["k-killed"]


async def test_a_delivery_that_lost_its_claim_does_not_record_its_outcome(
    migrated_engine: AsyncEngine,
) -> None:
    """A dispatcher whose claim ran out and was taken must not mark the row: the new claim's
    delivery decides what happens to it."""
    sessions = session_factory(migrated_engine)
    clock = FakeClock()
    await OutboxNotifier(sessions, clock=clock).to_user("u-1", NOTE, key="k-taken")

    class TakenMeanwhile(RecordingNotifier):
        async def to_user(self, user_id: str, notification: Notification, *, key: str) -> None:
            clock.advance(seconds=outbox.CLAIM_SECONDS + 1)
            async with write_transaction(sessions) as session:  # a rival claims it, as _claim does
                row = await session.scalar(select(OutboxMessage))
                assert row is not None
                row.attempts += 1
                row.next_attempt_at = clock.now + dt.timedelta(seconds=outbox.CLAIM_SECONDS)
            raise ConnectionError("Teams is down")

    assert await OutboxDispatcher(sessions, TakenMeanwhile(), clock=clock).dispatch_due() == 0
    async with sessions() as session:
        row = await session.scalar(select(OutboxMessage))
    assert row is not None and (row.state, row.attempts, row.last_error) == ("sending", 2, None)
