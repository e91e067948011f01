"""One use case's transaction together with the messages it decided to send.

A change and the news of it must be committed together: written after the commit, a crash in
between loses the news (a ticket nobody is asked to approve); written before, a rollback
announces a change that never happened. A :class:`UnitOfWork` owns the transaction, collects the
messages a use case queues while it decides, writes them as outbox rows just before the commit,
and wakes the outbox dispatcher after it. Delivery to Teams then happens at least once and is
never lost (see ``docs/architecture.md``, "Delivery guarantee").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from types import TracebackType
from typing import Self

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from syncwarden.core.db import utc_now, write_transaction
from syncwarden.core.failures import report_unexpected
from syncwarden.core.logging import get_logger
from syncwarden.workflows.outbox import OutgoingMessage, queue_messages
from syncwarden.workflows.ports import Channel, Notification, TicketView

log = get_logger(__name__)
Clock = Callable[[], datetime]
OnQueued = Callable[[], Awaitable[None]]


async def _nothing() -> None:
    return None


class UnitOfWork:
    """``async with units() as work:`` then change rows on ``work.session`` and queue messages.

    Leaving the block normally commits the change and its messages in one transaction; leaving
    it with an exception rolls both back. A message whose key is already queued is dropped, so a
    use case retried after a crash queues nothing twice.
    """

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], clock: Clock, on_queued: OnQueued
    ) -> None:
        self._transaction = write_transaction(sessions)
        self._clock = clock
        self._on_queued = on_queued
        self._outgoing: list[OutgoingMessage] = []
        self._session: AsyncSession | None = None

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("a unit of work's session exists only inside its `async with`")
        return self._session

    @property
    def queued(self) -> int:
        return len(self._outgoing)

    def to_user(self, user_id: str, notification: Notification, *, key: str) -> None:
        self._outgoing.append(OutgoingMessage.to_user(user_id, notification, key=key))

    def to_channel(self, channel: Channel, notification: Notification, *, key: str) -> None:
        self._outgoing.append(OutgoingMessage.to_channel(channel, notification, key=key))

    def update_card(self, ticket: TicketView, *, key: str) -> None:
        """Refresh every posted copy of the ticket's approval card to its state in this commit.

        Once per ticket and commit, with the last state asked for: an approval moves a ticket
        twice in one commit (approved, then provisioning), and the first update would only be
        written over by the second, a PUT to every copy of the card for nothing.
        """
        self._outgoing = [
            message
            for message in self._outgoing
            if not (message.target == "card" and message.recipient == ticket.ref)
        ]
        self._outgoing.append(OutgoingMessage.card_update(ticket, key=key))

    async def __aenter__(self) -> Self:
        self._session = await self._transaction.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        if exc_type is None and self._outgoing:
            try:
                await queue_messages(self.session, self._outgoing, self._clock())
            except BaseException as error:
                await self._transaction.__aexit__(type(error), error, error.__traceback__)
                raise
        result = await self._transaction.__aexit__(exc_type, exc, traceback)
        self._session = None
        if exc_type is None and self._outgoing:
            try:
                await self._on_queued()
            except Exception as error:  # committed either way; the dispatcher's poll sends it
                report_unexpected(log, "outbox.wake_failed", error, where="unit_of_work.wake")
        return result


class UnitsOfWork:
    """Opens :class:`UnitOfWork` s on one database; the use cases' only way to write and notify.

    ``on_queued`` runs after every commit that queued a message: in the service it wakes the
    outbox dispatcher so the message leaves at once rather than at the next poll.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        clock: Clock = utc_now,
        on_queued: OnQueued | None = None,
    ) -> None:
        self.sessions = sessions
        self._clock = clock
        self._on_queued = on_queued or _nothing

    def __call__(self) -> UnitOfWork:
        return UnitOfWork(self.sessions, self._clock, self._on_queued)
