"""A durable outbox in front of the Teams notifier: the rows and how they are queued.

Use cases queue notifications as rows keyed by the notification's idempotency key, in the same
commit as the change they announce (:func:`queue_messages`, through
:class:`workflows.unit_of_work.UnitOfWork`; a second write of the same key is ignored).
:class:`workflows.outbox_dispatch.OutboxDispatcher` delivers pending rows through the real
notifier and marks them sent. So a crash between an outside effect and its record can repeat the
*request* to notify, but never the message; and an outage of Teams delays messages instead of
losing them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String, Text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from syncwarden.core.db import (
    Base,
    UtcDateTime,
    insert_ignoring_duplicates,
    utc_now,
    write_transaction,
)
from syncwarden.workflows.ports import Channel, Notification, TicketView
from syncwarden.workflows.view_json import ticket_to_json


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
    await insert_ignoring_duplicates(
        session, OutboxMessage, outbox_rows(messages, now), unique="key"
    )


def outbox_rows(messages: Sequence[OutgoingMessage], now: datetime) -> list[dict[str, Any]]:
    """The outbox rows of ``messages``, one per key (the first message of a key wins), to insert
    ignoring keys already stored (see :func:`queue_messages`)."""
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
    return list(rows.values())


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


def _notification_payload(notification: Notification) -> dict[str, Any]:
    return {
        "kind": notification.kind.value,
        "text": notification.text,
        "details": dict(notification.details),
        "ticket": ticket_to_json(notification.ticket) if notification.ticket else None,
    }
