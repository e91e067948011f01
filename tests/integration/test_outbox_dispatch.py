"""The outbox dispatcher at work: many conversations at once, one conversation in order, a
rate-limited conversation put aside rather than waited on, and a stop answered in seconds."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import defaultdict

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from syncwarden.core.db import session_factory
from syncwarden.workflows import outbox_dispatch
from syncwarden.workflows.outbox import OutboxMessage, OutboxNotifier
from syncwarden.workflows.outbox_dispatch import MAX_DELIVERY_ATTEMPTS, OutboxDispatcher
from syncwarden.workflows.ports import DeliveryPostponedError, Notification, NotificationKind
from tests.support.notifier import RecordingNotifier
from tests.support.tickets import sample_ticket
from tests.support.workflow import FakeClock

NOTE = Notification(NotificationKind.INSTRUCTIONS, sample_ticket(), "Your calendar sync is ready")


async def queue(sessions: async_sessionmaker[AsyncSession], clock: FakeClock, *to: str) -> None:
    outbox = OutboxNotifier(sessions, clock=clock)
    for number, user in enumerate(to):
        await outbox.to_user(user, NOTE, key=f"k-{number}-{user}")


async def rows(sessions: async_sessionmaker[AsyncSession]) -> list[OutboxMessage]:
    async with sessions() as session:
        return list((await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))).all())


class WaitsForAnother(RecordingNotifier):
    """Ada's message cannot finish until Bea's has been handed over: delivered one after the
    other, Ada's delivery would hold everyone up until its deadline."""

    def __init__(self) -> None:
        super().__init__()
        self.bea_seen = asyncio.Event()

    async def to_user(self, user_id: str, notification: Notification, *, key: str) -> None:
        if user_id == "ada":
            await self.bea_seen.wait()
        else:
            self.bea_seen.set()
        await super().to_user(user_id, notification, key=key)


async def test_a_slow_conversation_does_not_hold_up_the_others(
    migrated_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_dispatch, "CLAIM_HOLD_SECONDS", 5.0)
    sessions = session_factory(migrated_engine)
    clock = FakeClock()
    await queue(sessions, clock, "ada", "bea")
    teams = WaitsForAnother()
    assert await OutboxDispatcher(sessions, teams, clock=clock).dispatch_due() == 2
    assert sorted(sent.target for sent in teams.sent) == ["user:ada", "user:bea"]


class CountsInFlight(RecordingNotifier):
    """Notes how many deliveries to each person overlap, and lets every delivery pause so that
    overlapping ones would show."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight: defaultdict[str, int] = defaultdict(int)
        self.most_at_once: defaultdict[str, int] = defaultdict(int)
        self.everyone_at_once = 0
        self._running = 0

    async def to_user(self, user_id: str, notification: Notification, *, key: str) -> None:
        self.in_flight[user_id] += 1
        self._running += 1
        self.most_at_once[user_id] = max(self.most_at_once[user_id], self.in_flight[user_id])
        self.everyone_at_once = max(self.everyone_at_once, self._running)
        for _ in range(3):  # hand control to the other deliveries, as a network call would
            await asyncio.sleep(0)
        await super().to_user(user_id, notification, key=key)
        self.in_flight[user_id] -= 1
        self._running -= 1


async def test_each_persons_messages_go_one_at_a_time_in_the_order_queued(
    migrated_engine: AsyncEngine,
) -> None:
    sessions = session_factory(migrated_engine)
    clock = FakeClock()
    await queue(sessions, clock, "ada", "ada", "bea", "ada", "cyd", "bea")
    teams = CountsInFlight()
    assert await OutboxDispatcher(sessions, teams, clock=clock).dispatch_due() == 6
    assert dict(teams.most_at_once) == {"ada": 1, "bea": 1, "cyd": 1}
    assert teams.everyone_at_once == 3, "the three people were served side by side"
    assert [s.key for s in teams.to("user:ada")] == ["k-0-ada", "k-1-ada", "k-3-ada"]
    assert [s.key for s in teams.to("user:bea")] == ["k-2-bea", "k-5-bea"]


class BusyConversation(RecordingNotifier):
    """Ada's chat has no room for ``wait`` seconds after each message (the bot's rate limiter
    says so before anything is sent)."""

    def __init__(self, clock: FakeClock, wait: float) -> None:
        super().__init__()
        self._clock = clock
        self._wait = wait
        self.free_at = clock.now

    async def to_user(self, user_id: str, notification: Notification, *, key: str) -> None:
        if user_id == "ada":
            if self._clock.now < self.free_at:
                left = (self.free_at - self._clock.now).total_seconds()
                raise DeliveryPostponedError("no room", retry_after=left)
            self.free_at = self._clock.now + dt.timedelta(seconds=self._wait)
        await super().to_user(user_id, notification, key=key)


async def test_a_rate_limited_conversation_is_put_aside_without_using_up_its_attempts(
    migrated_engine: AsyncEngine,
) -> None:
    """A backlog to one busy conversation waits its turn: each message is postponed until the
    conversation has room, costs none of its attempts, and is never given up on, however long
    the backlog; others are not held up meanwhile."""
    sessions = session_factory(migrated_engine)
    clock = FakeClock()
    backlog = MAX_DELIVERY_ATTEMPTS + 3
    await queue(sessions, clock, *["ada"] * backlog, "bea")
    teams = BusyConversation(clock, wait=30.0)
    dispatcher = OutboxDispatcher(sessions, teams, clock=clock)
    assert await dispatcher.dispatch_due() == 2, "ada's first message and bea's"
    first_pending = next(row for row in await rows(sessions) if row.state == "pending")
    assert first_pending.attempts == 0
    assert first_pending.next_attempt_at == clock.now + dt.timedelta(seconds=30)
    for _ in range(backlog * 2):
        clock.advance(seconds=30)
        await dispatcher.dispatch_due()
    assert [row.state for row in await rows(sessions)] == ["sent"] * (backlog + 1)
    assert [s.key for s in teams.to("user:ada")] == [f"k-{n}-ada" for n in range(backlog)]


class NeverAnswers(RecordingNotifier):
    """Teams taking a message and never answering."""

    def __init__(self) -> None:
        super().__init__()
        self.started = 0
        self.all_started = asyncio.Event()
        self.expected = 0

    async def to_user(self, user_id: str, notification: Notification, *, key: str) -> None:
        self.started += 1
        if self.started == self.expected:
            self.all_started.set()
        await asyncio.Event().wait()


async def test_a_stop_is_answered_in_seconds_whatever_the_backlog_and_hands_the_rows_back(
    migrated_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_dispatch, "STOP_GRACE_SECONDS", 0.05)
    sessions = session_factory(migrated_engine)
    clock = FakeClock()
    await queue(sessions, clock, *[f"person-{n}" for n in range(40)])
    teams = NeverAnswers()
    teams.expected = 4
    dispatcher = OutboxDispatcher(sessions, teams, clock=clock, concurrency=4)
    stop = asyncio.Event()
    running = asyncio.create_task(dispatcher.run_forever(stop, poll_seconds=3600))
    async with asyncio.timeout(30):
        await teams.all_started.wait()
        stop.set()
        await running  # without the wind-down this waits on deliveries that never end
    states = [(row.state, row.attempts, row.next_attempt_at) for row in await rows(sessions)]
    assert states == [("pending", 0, clock.now)] * 40, "every row due again, no attempt spent"
    assert teams.started == 4, "nothing beyond the slots was claimed"


async def test_the_dispatcher_needs_room_for_a_delivery(migrated_engine: AsyncEngine) -> None:
    with pytest.raises(ValueError, match="at least one"):
        OutboxDispatcher(session_factory(migrated_engine), RecordingNotifier(), concurrency=0)
