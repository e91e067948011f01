"""A notifier that records what would have been sent to Teams, keyed like a durable outbox."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from syncwarden.core.db import utc_now
from syncwarden.workflows.outbox_dispatch import OutboxDispatcher
from syncwarden.workflows.ports import Channel, Notification, NotificationKind, TicketView
from syncwarden.workflows.unit_of_work import UnitsOfWork


@dataclass
class Sent:
    target: str
    kind: NotificationKind | None
    ref: str
    text: str
    key: str


@dataclass
class RecordingNotifier:
    sent: list[Sent] = field(default_factory=list)
    fail_next: int = 0

    async def to_user(self, user_id: str, notification: Notification, *, key: str) -> None:
        self._record(f"user:{user_id.lower()}", notification, key)

    async def to_channel(self, channel: Channel, notification: Notification, *, key: str) -> None:
        self._record(f"channel:{channel.value}", notification, key)

    async def update_card(self, ticket: TicketView, *, key: str) -> None:
        self.sent.append(Sent("card", None, ticket.ref, ticket.status, key))

    def _record(self, target: str, notification: Notification, key: str) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("Teams is down")
        self.sent.append(
            Sent(
                target,
                notification.kind,
                notification.ticket.ref if notification.ticket else "",
                notification.text,
                key,
            )
        )

    def to(self, target: str, kind: NotificationKind | None = None) -> list[Sent]:
        return [s for s in self.sent if s.target == target and (kind is None or s.kind == kind)]

    def kinds(self, target: str) -> list[NotificationKind | None]:
        return [s.kind for s in self.sent if s.target == target]


def recording_units(
    sessions: async_sessionmaker[AsyncSession],
    notifier: RecordingNotifier,
    *,
    clock: Callable[[], datetime] = utc_now,
) -> UnitsOfWork:
    """Units of work whose messages go through the real outbox, delivered at each commit.

    The production path (rows written in the change's commit, the dispatcher claiming and sending
    them) with Teams replaced by the recorder, delivered as soon as the commit is done, so a test
    can look at what was sent right after the call that sent it.
    """
    dispatcher = OutboxDispatcher(sessions, notifier, clock=clock)

    async def deliver() -> None:
        await dispatcher.dispatch_due()

    return UnitsOfWork(sessions, clock=clock, on_queued=deliver)
