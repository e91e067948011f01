"""Delivering the outbox: many conversations at once, each conversation's messages in order.

One slow or rate-limited conversation (a busy IT channel, a person whose chat must first be
installed) must not hold up everyone else's messages, so up to ``concurrency`` deliveries run at
once, never two for the same conversation (so one person's messages arrive in the order they were
queued). A message whose conversation has spent its Teams send budget is put back with its next
attempt at the time the budget allows, instead of waiting inside a delivery, and that costs it none
of its attempts. On stop, nothing new is claimed, deliveries under way get a few seconds to finish,
and the rest are cancelled with their rows handed back, so SIGTERM is answered in seconds whatever
the backlog.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from syncwarden.core.db import utc_now, write_transaction
from syncwarden.core.failures import report_unexpected
from syncwarden.core.logging import get_logger
from syncwarden.core.tasks import running_alongside
from syncwarden.workflows.audit import record_audit
from syncwarden.workflows.outbox import OutboxMessage, OutgoingMessage, queue_messages
from syncwarden.workflows.ports import (
    Channel,
    DeliveryDeferredError,
    DeliveryPostponedError,
    Notification,
    NotificationKind,
    Notifier,
    UndeliverableError,
)
from syncwarden.workflows.view_json import ticket_from_json

log = get_logger(__name__)
MAX_DELIVERY_ATTEMPTS = 12
# A claimed row is parked (state "sending") this long, and the claim is renewed every
# CLAIM_RENEW_SECONDS while its delivery lasts; a dispatcher that died mid-send leaves the row due
# again when the claim runs out, so a crash delays its messages by at most a minute.
CLAIM_SECONDS = 60.0
CLAIM_RENEW_SECONDS = 15.0
# A delivery stops this long after its claim was last renewed (or taken), well before the claim
# runs out: a delivery still sending when another replica claims the row would send it twice.
CLAIM_HOLD_SECONDS = 45.0
# However often its claim is renewed, one delivery ends after this long.
DELIVERY_DEADLINE_SECONDS = 240.0
# Deliveries in flight at once. Teams allows an app 50 requests a second per tenant (the bot's
# own limiter keeps to that); a delivery is one to three requests of a few hundred milliseconds.
DELIVERY_CONCURRENCY = 16
# On stop, deliveries under way get this long to finish before they are cancelled.
STOP_GRACE_SECONDS = 5.0
# Handing a cancelled delivery's row back is given this long (the database may be what hangs).
RELEASE_TIMEOUT_SECONDS = 2.0

Conversation = tuple[str, str]


@dataclass(frozen=True)
class _Claim:
    """One dispatcher's claim on a row: the row, and its attempt count when claimed (each
    claim counts an attempt, so a later claim of the same row has a higher count)."""

    message_id: int
    attempt: int

    def still_ours(self) -> tuple[ColumnElement[bool], ...]:
        return (
            OutboxMessage.id == self.message_id,
            OutboxMessage.state == "sending",
            OutboxMessage.attempts == self.attempt,
        )


def _conversation_of(message: OutboxMessage) -> Conversation:
    """What a message's order is kept within: its target and recipient (a person, a channel, or
    the ticket whose card it updates)."""
    return (message.target, message.recipient)


def _due(now: datetime) -> tuple[ColumnElement[bool], ...]:
    # A row a crashed dispatcher left "sending" is due again when its claim runs out.
    return (
        OutboxMessage.state.in_(("pending", "sending")),
        OutboxMessage.next_attempt_at <= now,
    )


class OutboxDispatcher:
    """Delivers pending outbox rows, oldest first per conversation, many conversations at once,
    retrying failures with growing pauses."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        delivery: Notifier,
        *,
        clock: Callable[[], datetime] = utc_now,
        rng: random.Random | None = None,
        on_claim_renewed: Callable[[int], None] | None = None,
        concurrency: int = DELIVERY_CONCURRENCY,
    ) -> None:
        """``on_claim_renewed`` is told the row id each time a delivery's claim is renewed."""
        if concurrency < 1:
            raise ValueError("the outbox needs room for at least one delivery at a time")
        self._sessions = sessions
        self._delivery = delivery
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrecy
        self._wake = asyncio.Event()
        self._on_claim_renewed = on_claim_renewed
        self._concurrency = concurrency

    def wake(self) -> None:
        """Deliver now rather than at the next poll (called when a message is queued)."""
        self._wake.set()

    async def run_forever(self, stop: asyncio.Event, *, poll_seconds: float = 5.0) -> None:
        """Keep up to ``concurrency`` deliveries going until ``stop``; then wind down quickly."""
        deliveries: dict[asyncio.Task[int], Conversation] = {}
        try:
            while not stop.is_set():
                self._wake.clear()
                pause = poll_seconds
                try:
                    claimed = await self._claim(
                        self._concurrency - len(deliveries), busy=set(deliveries.values())
                    )
                    for message in claimed:
                        task = asyncio.create_task(
                            self._deliver(message), name=f"outbox-delivery-{message.id}"
                        )
                        deliveries[task] = _conversation_of(message)
                    pause = await self._pause_until_due(poll_seconds)
                except Exception as error:  # the database may be briefly away; try again later
                    report_unexpected(log, "outbox.loop_failed", error, where="outbox.loop")
                await self._until_something_happens(stop, deliveries, pause)
                for task in [task for task in deliveries if task.done()]:
                    del deliveries[task]
        finally:
            await self._wind_down(deliveries)

    async def dispatch_due(self, *, limit: int = 100) -> int:
        """Deliver what is due now, ``concurrency`` at a time; returns how many were sent."""
        sent = handled = 0
        while handled < limit:
            batch = await self._claim(min(self._concurrency, limit - handled), busy=())
            if not batch:
                break
            handled += len(batch)
            sent += sum(await asyncio.gather(*(self._deliver(message) for message in batch)))
        return sent

    async def _claim(self, room: int, *, busy: Collection[Conversation]) -> list[OutboxMessage]:
        """Claim up to ``room`` due rows: the oldest due row of each conversation, none of a
        conversation in ``busy`` (one of its messages is being delivered), oldest first.

        Rows another dispatcher holds locked are skipped, not waited for.
        """
        if room <= 0:
            return []
        now = self._clock()
        oldest_of_each = (
            select(func.min(OutboxMessage.id))
            .where(*_due(now))
            .group_by(OutboxMessage.target, OutboxMessage.recipient)
            .order_by(func.min(OutboxMessage.id))
            .limit(room + len(busy))
        )
        async with write_transaction(self._sessions) as session:
            rows = await session.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.id.in_(oldest_of_each), *_due(now))
                .order_by(OutboxMessage.id)
                .with_for_update(skip_locked=True)
            )
            claimed = [row for row in rows.all() if _conversation_of(row) not in busy][:room]
            for message in claimed:
                # Parked while we send, so a second dispatcher does not pick it up meanwhile.
                message.state = "sending"
                message.attempts += 1
                message.next_attempt_at = now + timedelta(seconds=CLAIM_SECONDS)
            return claimed

    async def _pause_until_due(self, poll_seconds: float) -> float:
        """How long until the next row falls due (a postponed message, a retry), up to a poll.

        A row due already is one whose conversation is busy or that found no free slot: the end
        of a delivery wakes the loop for it, so it is no reason to spin.
        """
        now = self._clock()
        async with self._sessions() as session:
            soonest = await session.scalar(
                select(func.min(OutboxMessage.next_attempt_at)).where(
                    OutboxMessage.state == "pending", OutboxMessage.next_attempt_at > now
                )
            )
        if soonest is None:
            return poll_seconds
        return min(poll_seconds, max(0.0, (soonest - now).total_seconds()))

    async def _until_something_happens(
        self, stop: asyncio.Event, deliveries: Collection[asyncio.Task[int]], pause: float
    ) -> None:
        """Wait for a stop, a newly queued message, a delivery that ended, or ``pause``."""
        stopped = asyncio.ensure_future(stop.wait())
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait(
                {stopped, woken, *deliveries}, timeout=pause, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopped.cancel()
            woken.cancel()

    async def _wind_down(self, deliveries: Collection[asyncio.Task[int]]) -> None:
        """Give deliveries under way a few seconds, then cancel the rest (each hands its row
        back as it ends), so a stop never waits on a backlog or a slow conversation."""
        if not deliveries:
            return
        _, unfinished = await asyncio.wait(deliveries, timeout=STOP_GRACE_SECONDS)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*deliveries, return_exceptions=True)
        if unfinished:
            log.info("outbox.stopped_mid_delivery", handed_back=len(unfinished))

    async def _deliver(self, message: OutboxMessage) -> int:
        claim = _Claim(message.id, message.attempts)
        try:
            async with asyncio.timeout(CLAIM_HOLD_SECONDS) as held:
                async with self._claim_kept(claim, held):
                    await _send(self._delivery, message)
        except asyncio.CancelledError:
            await self._hand_back(claim)
            raise
        except UndeliverableError as error:
            await self._finish(claim, sent=False, error=str(error), final=True)
            return 0
        except TimeoutError:
            log.warning("outbox.deferred", message=message.id, error="delivery took too long")
            await self._finish(claim, sent=False, error="delivery took too long")
            return 0
        except DeliveryPostponedError as error:
            log.info("outbox.postponed", message=message.id, wait_seconds=error.wait_seconds)
            await self._postpone(claim, error.wait_seconds)
            return 0
        except Exception as error:  # recorded on the row and retried later
            wait = None
            if isinstance(error, DeliveryDeferredError):
                log.warning("outbox.deferred", message=message.id, error=str(error))
                wait = error.retry_after
            else:
                report_unexpected(log, "outbox.delivery_crashed", error, where="outbox.deliver")
            await self._finish(
                claim, sent=False, error=f"{type(error).__name__}: {error}", wait=wait
            )
            return 0
        await self._finish(claim, sent=True, error=None)
        return 1

    @asynccontextmanager
    async def _claim_kept(self, claim: _Claim, held: asyncio.Timeout) -> AsyncIterator[None]:
        """Renew the claim on a timer while the block runs, and move the block's deadline
        (``held``) on with each renewal, up to the delivery deadline.

        A renewal that fails or finds the row claimed by someone else does not move the
        deadline, so the delivery stops before anyone else can take the row.
        """
        loop = asyncio.get_running_loop()
        last_moment = loop.time() + DELIVERY_DEADLINE_SECONDS

        async def keep() -> None:
            while True:
                await asyncio.sleep(CLAIM_RENEW_SECONDS)
                try:
                    renewed = await self._renew(claim)
                except Exception as error:  # the deadline is left alone: the delivery stops
                    report_unexpected(log, "outbox.claim_renewal_failed", error, where="outbox")
                    continue
                if not renewed:
                    log.warning("outbox.claim_lost", message=claim.message_id)
                    return
                held.reschedule(min(last_moment, loop.time() + CLAIM_HOLD_SECONDS))
                if self._on_claim_renewed is not None:
                    self._on_claim_renewed(claim.message_id)

        async with running_alongside(keep(), name=f"outbox-claim-{claim.message_id}"):
            yield

    async def _renew(self, claim: _Claim) -> bool:
        async with write_transaction(self._sessions) as session:
            renewed = await session.execute(
                update(OutboxMessage)
                .where(*claim.still_ours())
                .values(next_attempt_at=self._clock() + timedelta(seconds=CLAIM_SECONDS))
            )
        return bool(renewed.rowcount)  # type: ignore[attr-defined]

    async def _postpone(self, claim: _Claim, wait_seconds: float) -> None:
        """Put a row back, due when its conversation has room again, its attempt not counted."""
        async with write_transaction(self._sessions) as session:
            await session.execute(
                update(OutboxMessage)
                .where(*claim.still_ours())
                .values(
                    state="pending",
                    attempts=OutboxMessage.attempts - 1,
                    next_attempt_at=self._clock() + timedelta(seconds=wait_seconds),
                )
            )

    async def _hand_back(self, claim: _Claim) -> None:
        """A delivery cancelled by a stop: its row is due again at once, its attempt not counted.

        Teams may have taken the message just before the cancellation; the grace period before
        cancelling keeps that window small. Should the database not answer in time, the claim
        simply runs out, as after a crash.
        """
        try:
            async with asyncio.timeout(RELEASE_TIMEOUT_SECONDS):
                await self._postpone(claim, 0.0)
        except Exception as error:  # the claim runs out instead; worth a look, not a crash
            report_unexpected(log, "outbox.hand_back_failed", error, where="outbox.stop")

    async def _finish(
        self,
        claim: _Claim,
        *,
        sent: bool,
        error: str | None,
        final: bool = False,
        wait: float | None = None,
    ) -> None:
        now = self._clock()
        async with write_transaction(self._sessions) as session:
            message = await session.scalar(
                select(OutboxMessage).where(*claim.still_ours()).with_for_update()
            )
            if message is None:  # claimed again after ours ran out: the new claim decides
                log.warning("outbox.claim_lost", message=claim.message_id, sent=sent)
                return
            if sent:
                message.state = "sent"
                message.sent_at = now
                message.last_error = None
                return
            message.last_error = (error or "")[:2000]
            if final or message.attempts >= MAX_DELIVERY_ATTEMPTS:
                message.state = "failed"
                log.error("outbox.gave_up", key=message.key, error=message.last_error)
                await _report_undeliverable(session, message, now)
                return
            pause = min(3600.0, 5.0 * 2 ** (message.attempts - 1))
            message.state = "pending"
            message.next_attempt_at = now + timedelta(
                seconds=max(wait or 0.0, pause / 2 + self._rng.uniform(0, pause / 2))
            )


async def _report_undeliverable(
    session: AsyncSession, message: OutboxMessage, now: datetime
) -> None:
    """A message given up on is told to IT and recorded on its ticket, in the give-up's commit.

    Without this it would only be a log line: the person never hears, and nobody knows to tell
    them. A message to the IT channel itself has nobody left to tell; it stays a log line.
    """
    if message.target == "channel" and message.recipient == Channel.IT.value:
        return
    ticket = message.payload.get("ticket") if message.target != "card" else None
    ticket_ref = message.recipient if message.target == "card" else (ticket or {}).get("ref")
    what = (
        f"the card of {ticket_ref}"
        if message.target == "card"
        else f"a {message.payload.get('kind', 'message')} message to {_recipient_label(message)}"
    )
    text = (
        f"Syncwarden gave up delivering {what}: {message.last_error}. "
        "It will not try again; please pass it on by hand."
    )
    told = Notification(NotificationKind.DELIVERY_FAILED, None, text)
    key = f"undeliverable:{message.key}"
    await queue_messages(session, [OutgoingMessage.to_channel(Channel.IT, told, key=key)], now)
    if ticket_ref:
        record_audit(
            session,
            actor="syncwarden",
            action="notification_undeliverable",
            ticket_ref=str(ticket_ref),
            after={"key": message.key, "target": message.target, "error": message.last_error},
        )


def _recipient_label(message: OutboxMessage) -> str:
    """Who a message was for, by name where its ticket says who that id is."""
    if message.target == "channel":
        return f"the {message.recipient} channel"
    ticket = message.payload.get("ticket") or {}
    for role in ("subject", "requester"):
        person = ticket.get(role) or {}
        if person.get("id") == message.recipient:
            return f"{person.get('name') or person.get('id')} ({role})"
    return f"user {message.recipient}"


async def _send(delivery: Notifier, message: OutboxMessage) -> None:
    payload = message.payload
    if message.target == "card":
        await delivery.update_card(ticket_from_json(payload["ticket"]), key=message.key)
        return
    notification = Notification(
        kind=NotificationKind(payload["kind"]),
        ticket=ticket_from_json(payload["ticket"]) if payload.get("ticket") else None,
        text=payload["text"],
        details=dict(payload.get("details") or {}),
    )
    if message.target == "user":
        await delivery.to_user(message.recipient, notification, key=message.key)
    else:
        await delivery.to_channel(Channel(message.recipient), notification, key=message.key)
