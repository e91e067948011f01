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
from typing import Any, Self

from sqlalchemy import Select, Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from syncwarden.core.combined_writes import run_writes
from syncwarden.core.db import database_of, outside_transaction, utc_now, write_transaction
from syncwarden.core.failures import report_unexpected
from syncwarden.core.logging import get_logger
from syncwarden.core.row_writes import RowsInsert, RowUpdate, Write
from syncwarden.core.sqlite_direct import DirectSqliteTransaction, open_direct_transaction
from syncwarden.workflows.audit import PENDING_AUDIT_ROWS, AuditEvent, audit_values
from syncwarden.workflows.outbox import OutboxMessage, OutgoingMessage, outbox_rows
from syncwarden.workflows.ports import Channel, Notification, TicketView

log = get_logger(__name__)
Clock = Callable[[], datetime]
OnQueued = Callable[[], Awaitable[None]]


async def _nothing() -> None:
    return None


class RowChangedError(Exception):
    """An optimistic unit of work found its guarded row changed since it was read, so it wrote
    nothing: read again and decide again (see :meth:`UnitsOfWork.optimistic`)."""


class UnitOfWork:
    """``async with units() as work:`` then change rows on ``work.session`` and queue messages.

    Leaving the block normally commits the change and its messages in one transaction; leaving
    it with an exception rolls both back. A message whose key is already queued is dropped, so a
    use case retried after a crash queues nothing twice.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        on_queued: OnQueued,
        *,
        optimistic: bool = False,
    ) -> None:
        self._sessions = sessions
        self._transaction = write_transaction(sessions)
        self._optimistic = optimistic
        self._unlocked = False
        self._clock = clock
        self._on_queued = on_queued
        self._outgoing: list[OutgoingMessage] = []
        self._rows: dict[tuple[Table, tuple[str, ...]], list[dict[str, Any]]] = {}
        self._updates: list[RowUpdate] = []
        # Audit rows in the order recorded, by :meth:`audit` or by ``record_audit`` on the session.
        self._audits: list[dict[str, Any]] = []
        self._session: AsyncSession | None = None
        self._direct: DirectSqliteTransaction | None = None

    @property
    def session(self) -> AsyncSession:
        if self._direct is not None:
            raise RuntimeError("an optimistic unit of work on SQLite has no session: read rows()")
        if self._session is None:
            raise RuntimeError("a unit of work's session exists only inside its `async with`")
        return self._session

    async def rows(self, statement: Select[Any], values: dict[str, Any]) -> list[Any]:
        """The rows of a read in this work's transaction (or, :attr:`reads_unlocked`, with
        none): the one way an optimistic unit of work reads, since on SQLite it has no session
        (see :meth:`UnitsOfWork.optimistic`)."""
        if self._direct is not None:
            return await self._direct.rows(statement, values)
        return list((await self.session.execute(statement, values)).all())

    @property
    def reads_unlocked(self) -> bool:
        """True when this work holds no transaction and no lock until its one write
        (:meth:`UnitsOfWork.optimistic`): an update must then carry the version its row was read
        at (``unchanged_since``), and nothing may be written through the session."""
        return self._unlocked

    @property
    def queued(self) -> int:
        return len(self._outgoing)

    def insert(self, table: Table, row: dict[str, Any]) -> None:
        """Insert ``row`` into ``table`` just before the commit, without an ORM object.

        Rows of one table (with the same columns) go in one ``INSERT`` of many rows, in the order
        they were given, after the session's own changes are flushed (so a row may refer to an
        object added to the session); on PostgreSQL all of the commit's updates, inserts and
        outbox rows go in one statement (:mod:`core.combined_writes`). Nothing reads them back
        before the commit: this is for rows the use case only writes (audit events, a
        decision's steps).
        """
        self._rows.setdefault((table, tuple(row)), []).append(row)

    def update(
        self,
        table: Table,
        row_id: int,
        values: dict[str, Any],
        *,
        unchanged_since: int | None = None,
    ) -> None:
        """``UPDATE table SET values WHERE id = row_id`` with the commit, beside the inserts
        (see :meth:`insert`; no write there may depend on another): for a row the use case took
        out of the session to spare the ORM's flush, and reads no more.

        ``unchanged_since``: the row's version as read (``core.row_writes.ROW_VERSION``), as it
        must be when :attr:`reads_unlocked`; if the row changed since, the commit writes nothing
        and raises :class:`RowChangedError`.
        """
        self._updates.append(RowUpdate(table, row_id, values, unchanged_since))

    def audit(
        self,
        *,
        actor: str,
        action: str,
        ticket_ref: str | None = None,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
    ) -> None:
        """An audit row written with this work's commit (see :meth:`insert`)."""
        values = audit_values(
            actor=actor, action=action, ticket_ref=ticket_ref, before=before, after=after
        )
        self._audits.append(values)

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
        if self._optimistic and database_of(self._sessions) == "postgresql":
            session = self._sessions()  # no connection yet: that comes with the first statement
            await outside_transaction(session)
            self._session, self._unlocked = session, True
        elif self._optimistic:
            self._direct = await open_direct_transaction(self._sessions)
            if self._direct is not None:
                self._unlocked = True
                return self
        if self._session is None:
            self._session = await self._transaction.__aenter__()
        self._session.info[PENDING_AUDIT_ROWS] = self._audits
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        if self._direct is not None:
            await self._exit_direct(exc_type)
            return None
        self.session.info.pop(PENDING_AUDIT_ROWS, None)
        if self._unlocked:
            return await self._exit_unlocked(exc_type)
        if exc_type is None and (self._outgoing or self._rows or self._audits or self._updates):
            try:
                await self._write_rows()
            except BaseException as error:
                await self._transaction.__aexit__(type(error), error, error.__traceback__)
                raise
        result = await self._transaction.__aexit__(exc_type, exc, traceback)
        self._session = None
        if exc_type is None and self._outgoing:
            await self._wake()
        return result

    async def _exit_unlocked(self, exc_type: type[BaseException] | None) -> bool | None:
        """Everything queued as one statement, which commits itself; nothing on an exception."""
        session = self.session
        try:
            if exc_type is not None:
                return None
            if session.new or session.dirty or session.deleted:
                # Flushed here, they would be committed on their own, before the guarded write.
                raise RuntimeError("an optimistic unit of work writes only what it queues")
            self._check_guarded()
            if not await run_writes(session, self._queued_writes()):
                raise RowChangedError
        finally:
            await session.close()
            self._session = None
        if self._outgoing:
            await self._wake()
        return None

    async def _exit_direct(self, exc_type: type[BaseException] | None) -> None:
        """Everything queued, with the ``COMMIT``; nothing on an exception."""
        direct = self._direct
        assert direct is not None
        try:
            if exc_type is None:
                self._check_guarded()
                if not await direct.commit(self._queued_writes()):
                    raise RowChangedError
        finally:
            self._direct = None
            await direct.close()
        if exc_type is None and self._outgoing:
            await self._wake()

    def _check_guarded(self) -> None:
        if any(update.unchanged_since is None for update in self._updates):
            raise RuntimeError("an optimistic unit of work updates only rows it read")

    async def _wake(self) -> None:
        try:
            await self._on_queued()
        except Exception as error:  # committed either way; the dispatcher's poll sends it
            report_unexpected(log, "outbox.wake_failed", error, where="unit_of_work.wake")

    async def _write_rows(self) -> None:
        """Everything queued, after the session's own changes: one statement on PostgreSQL
        (see :mod:`core.combined_writes`), in the trip of the ``COMMIT`` that follows on SQLite
        (:mod:`core.sqlite_writes`). A flush with nothing to flush still costs a trip through
        SQLAlchemy's machinery, so there is none when the session holds no change (a click)."""
        session = self.session
        if session.new or session.dirty or session.deleted:
            await session.flush()
        if not await run_writes(session, self._queued_writes(), commit_next=True):
            raise RowChangedError

    def _queued_writes(self) -> list[Write]:
        writes: list[Write] = list(self._updates)
        writes += [RowsInsert(table, rows) for (table, _columns), rows in self._rows.items()]
        if self._audits:
            writes.append(RowsInsert(_AUDIT, self._audits))
        if self._outgoing:
            rows = outbox_rows(self._outgoing, self._clock())
            writes.append(RowsInsert(_OUTBOX, rows, ignore_conflicts_on="key"))
        return writes


_AUDIT: Table = AuditEvent.__table__  # type: ignore[assignment]
_OUTBOX: Table = OutboxMessage.__table__  # type: ignore[assignment]


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

    def optimistic(self) -> UnitOfWork:
        """A unit of work that reads with no transaction and no lock and writes everything at
        once, guarded by the version of the one row it updates.

        No lock is held while the use case decides: on PostgreSQL two round trips instead of
        four (BEGIN, the locked read, the write, COMMIT), written as one statement
        (:mod:`core.combined_writes`); on SQLite the process's turn at the write lock is held
        for one trip (``BEGIN IMMEDIATE``, the writes, ``COMMIT``) instead of from the read to
        the commit, and the work runs on the driver's connection without a session
        (:mod:`core.sqlite_direct`). The price: when someone changed that row in between, the
        commit writes nothing and raises :class:`RowChangedError`, and the caller decides again
        on what it reads then.

        Reads go through :meth:`UnitOfWork.rows` (on SQLite there is no session), and the
        writes are only what it queues.
        """
        return UnitOfWork(self.sessions, self._clock, self._on_queued, optimistic=True)
