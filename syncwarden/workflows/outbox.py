"""A durable outbox in front of the Teams notifier.

Use cases queue notifications as rows keyed by the notification's idempotency key, in the same
commit as the change they announce (:func:`queue_messages`, through
:class:`workflows.unit_of_work.UnitOfWork`; a second write of the same key is ignored). The
:class:`OutboxDispatcher` delivers pending rows through the real notifier and marks them sent.
So a crash between an outside effect and its record can repeat the *request* to notify, but never
the message; and an outage of Teams delays messages instead of losing them.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, ColumnElement, Integer, String, Text, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from syncwarden.core.db import (
    Base,
    UtcDateTime,
    insert_ignoring_duplicates,
    utc_now,
    write_transaction,
)
from syncwarden.core.failures import report_unexpected
from syncwarden.core.logging import get_logger
from syncwarden.core.tasks import running_alongside
from syncwarden.workflows.audit import record_audit
from syncwarden.workflows.ports import (
    Channel,
    DeliveryDeferredError,
    Notification,
    NotificationKind,
    Notifier,
    TicketView,
    UndeliverableError,
)
from syncwarden.workflows.view_json import ticket_from_json, ticket_to_json

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


class OutboxMessage(Base):
    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(255), unique=True)
    target: Mapped[str] = mapped_column(String(16))
    recipient: Mapped[str] = mapped_column(String(128))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


@dataclass(frozen=True)
class OutgoingMessage:
    """One message to queue: where it goes, what it says, and the key that makes it happen once."""

    key: str
    target: str  # "user", "channel" or "card"
    recipient: str
    payload: dict[str, Any]

    @classmethod
    def to_user(cls, user_id: str, notification: Notification, *, key: str) -> OutgoingMessage:
        return cls(key, "user", user_id, _notification_payload(notification))

    @classmethod
    def to_channel(
        cls, channel: Channel, notification: Notification, *, key: str
    ) -> OutgoingMessage:
        return cls(key, "channel", channel.value, _notification_payload(notification))

    @classmethod
    def card_update(cls, ticket: TicketView, *, key: str) -> OutgoingMessage:
        return cls(key, "card", ticket.ref, {"ticket": ticket_to_json(ticket)})


async def queue_messages(
    session: AsyncSession, messages: Sequence[OutgoingMessage], now: datetime
) -> None:
    """Write messages as outbox rows in the caller's transaction; a key already queued is skipped.

    Written in the same commit as the change they announce, a message exists exactly when its
    change does: a crash can neither lose it nor announce a change that was rolled back.
    """
    rows: dict[str, dict[str, Any]] = {}
    for message in messages:
        key = message.key[:255]
        rows.setdefault(
            key,
            {
                "key": key,
                "target": message.target,
                "recipient": message.recipient,
                "payload": message.payload,
                "state": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            },
        )
    await insert_ignoring_duplicates(session, OutboxMessage, list(rows.values()), unique="key")


class OutboxNotifier:
    """A :class:`workflows.ports.Notifier` for callers without a transaction of their own.

    A provisioning step's message (the set-up instructions) and the sync worker's alerts are
    queued here, each in a transaction of its own; use cases that change state queue theirs in
    their own commit through :class:`workflows.unit_of_work.UnitOfWork` instead.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        clock: Callable[[], datetime] = utc_now,
        on_put: Callable[[], None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._on_put = on_put or (lambda: None)

    async def to_user(self, user_id: str, notification: Notification, *, key: str) -> None:
        await self._put(OutgoingMessage.to_user(user_id, notification, key=key))

    async def to_channel(self, channel: Channel, notification: Notification, *, key: str) -> None:
        await self._put(OutgoingMessage.to_channel(channel, notification, key=key))

    async def update_card(self, ticket: TicketView, *, key: str) -> None:
        await self._put(OutgoingMessage.card_update(ticket, key=key))

    async def _put(self, message: OutgoingMessage) -> None:
        async with write_transaction(self._sessions) as session:
            await queue_messages(session, [message], self._clock())
        self._on_put()


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


class OutboxDispatcher:
    """Delivers pending outbox rows, oldest first, retrying failures with growing pauses."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        delivery: Notifier,
        *,
        clock: Callable[[], datetime] = utc_now,
        rng: random.Random | None = None,
        on_claim_renewed: Callable[[int], None] | None = None,
    ) -> None:
        """``on_claim_renewed`` is told the row id each time a delivery's claim is renewed."""
        self._sessions = sessions
        self._delivery = delivery
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrecy
        self._wake = asyncio.Event()
        self._on_claim_renewed = on_claim_renewed

    def wake(self) -> None:
        """Deliver now rather than at the next poll (called when a message is queued)."""
        self._wake.set()

    async def run_forever(self, stop: asyncio.Event, *, poll_seconds: float = 5.0) -> None:
        while not stop.is_set():
            self._wake.clear()
            try:
                await self.dispatch_due()
            except Exception as error:  # the database may be briefly away; try again later
                report_unexpected(log, "outbox.loop_failed", error, where="outbox.loop")
            stopped = asyncio.ensure_future(stop.wait())
            woken = asyncio.ensure_future(self._wake.wait())
            _, waiting = await asyncio.wait(
                {stopped, woken}, timeout=poll_seconds, return_when=asyncio.FIRST_COMPLETED
            )
            for task in waiting:
                task.cancel()

    async def dispatch_due(self, *, limit: int = 100) -> int:
        """Deliver what is due; returns how many were sent."""
        sent = 0
        for _ in range(limit):
            message = await self._claim()
            if message is None:
                break
            sent += await self._deliver(message)
        return sent

    async def _claim(self) -> OutboxMessage | None:
        now = self._clock()
        async with write_transaction(self._sessions) as session:
            message = await session.scalar(
                select(OutboxMessage)
                .where(
                    # A row a crashed dispatcher left "sending" is due again when its pause ends.
                    OutboxMessage.state.in_(("pending", "sending")),
                    OutboxMessage.next_attempt_at <= now,
                )
                .order_by(OutboxMessage.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if message is None:
                return None
            # Park it while we send, so a second dispatcher does not pick it up meanwhile.
            message.state = "sending"
            message.attempts += 1
            message.next_attempt_at = now + timedelta(seconds=CLAIM_SECONDS)
            return message

    async def _deliver(self, message: OutboxMessage) -> int:
        claim = _Claim(message.id, message.attempts)
        try:
            async with asyncio.timeout(CLAIM_HOLD_SECONDS) as held:
                async with self._claim_kept(claim, held):
                    await _send(self._delivery, message)
        except UndeliverableError as error:
            await self._finish(claim, sent=False, error=str(error), final=True)
            return 0
        except TimeoutError:
            log.warning("outbox.deferred", message=message.id, error="delivery took too long")
            await self._finish(claim, sent=False, error="delivery took too long")
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


def _notification_payload(notification: Notification) -> dict[str, Any]:
    return {
        "kind": notification.kind.value,
        "text": notification.text,
        "details": dict(notification.details),
        "ticket": ticket_to_json(notification.ticket) if notification.ticket else None,
    }
