"""An optimistic SQLite write on the driver's connection, without SQLAlchemy's session.

For a unit of work that reads with a few fixed statements and writes only rows it queued, one
of them guarded by the version it read (an approver's decision: see
``workflows.unit_of_work.UnitsOfWork.optimistic``). It reads with no transaction and no lock
(in WAL mode each read sees the last commit), decides, and only then waits its turn in
:func:`core.db.sqlite_writers_queue` and sends, in one trip: ``BEGIN IMMEDIATE``, the guarded
update, the other writes and ``COMMIT``, or ``ROLLBACK`` when the guarded row changed since it
was read; with the commits of other such units waiting at the same moment when there are any
(:mod:`core.sqlite_group_commit`), each in a savepoint. SQLite's write lock is then held for
that one trip, where a decision that read under the lock held it across two trips and all the
CPU of deciding in between, and every other writer on the file (this process's, or a worker
process's) waited for all of it. (In the click benchmark, where one process is the only writer
and its CPU is the limit, the click rate barely moved: measured 2026-12-03, each commit waited
about 40 ms for its turn either way, the queue only moved.)

Around such a transaction SQLAlchemy's session and connection did nothing the use case needed,
yet cost an SQLite click about a millisecond of CPU (measured 2026-12-03 on the development
machine: 0.5 ms to set up the session and its connection, 0.4 ms to execute the one read, 0.5
ms to commit and close). Here the transaction takes a connection from the engine's pool (and
gives it back, reset, as a session would), runs each read as SQL compiled once per statement,
its parameters and results passed through the same type processing SQLAlchemy applies.
sqlite3's errors are raised as SQLAlchemy's.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import Status, StatusCode
from sqlalchemy import exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql import Select
from sqlalchemy.util import greenlet_spawn

from syncwarden.core.db import WriterTurn, sqlite_writers_queue
from syncwarden.core.row_writes import Write
from syncwarden.core.sqlite_driver import OneTripConnection
from syncwarden.core.sqlite_group_commit import GroupCommits, group_commits
from syncwarden.core.sqlite_writes import commit_trip, prepared_writes, trip_span
from syncwarden.core.tracing import tracing_installed

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Compiled:
    """A read's SQL for SQLite, the order of its parameters and how to convert each value."""

    sql: str
    parameters: tuple[tuple[str, Processor], ...]
    results: tuple[Processor, ...]

    def bound(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(
            processor(values[name]) if processor is not None else values[name]
            for name, processor in self.parameters
        )

    def row(self, raw: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(
            processor(value) if processor is not None else value
            for processor, value in zip(self.results, raw, strict=True)
        )


@functools.cache
def _compiled(statement: Select[Any], dialect: Dialect) -> _Compiled:
    compiled = statement.compile(dialect=dialect)
    names = compiled.positiontup or []
    if "POSTCOMPILE" in compiled.string:
        raise ValueError("a statement with expanding parameters (IN lists) is not supported here")
    parameters = tuple(
        (name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
        for name in names
    )
    results = tuple(
        column.type.dialect_impl(dialect).result_processor(dialect, None)
        for column in statement.selected_columns
    )
    return _Compiled(compiled.string, parameters, results)


class DirectSqliteTransaction:
    """Reads with no lock, then guarded writes and ``COMMIT`` in one trip, on one pooled
    connection; made by :func:`open_direct_transaction`, ended by :meth:`close`."""

    def __init__(
        self,
        dialect: Dialect,
        writer_turn: Callable[[], AbstractAsyncContextManager[WriterTurn | None]],
        pooled: PoolProxiedConnection,
        driver: OneTripConnection,
        group: GroupCommits,
    ) -> None:
        self._dialect = dialect
        self._writer_turn = writer_turn
        self._pooled = pooled
        self._driver = driver
        self._group = group

    async def rows(
        self, statement: Select[Any], values: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        """The statement's rows, converted as SQLAlchemy converts them (times, JSON, booleans);
        read in no transaction, so two reads may see different commits."""
        compiled = _compiled(statement, self._dialect)
        span = trip_span("db SELECT", compiled.sql) if tracing_installed() else None
        cursor = self._driver.cursor()
        try:
            await cursor.execute(compiled.sql, compiled.bound(values))
            raw = await cursor.fetchall()
        except sqlite3.Error as error:
            if span is not None:
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            raise exc.DBAPIError.instance(compiled.sql, None, error, sqlite3.Error) from error
        finally:
            await cursor.close()
            if span is not None:
                span.end()
        return [compiled.row(row) for row in raw]

    async def commit(self, writes: Sequence[Write]) -> bool:
        """In this process's turn at the write lock: ``BEGIN IMMEDIATE``, ``writes`` and
        ``COMMIT``, in one trip shared with the other commits waiting then; False, with nothing
        written, when the guarded update's row changed since it was read. The next writer's
        turn starts as the trip ends."""
        statements, guarded = prepared_writes(writes, self._dialect)
        with commit_trip(statements):
            return await self._group.commit(self._driver, self._writer_turn, (statements, guarded))

    async def close(self) -> None:
        """Roll back what a failed commit left open and give the connection back.

        A connection whose rollback failed is not given back as it is: the pool replaces it.
        """
        try:
            try:
                await self._driver.rollback()  # nothing to do unless a commit failed halfway
            except BaseException:
                await greenlet_spawn(self._pooled.invalidate)
                raise
        finally:
            await greenlet_spawn(self._pooled.close)


async def open_direct_transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> DirectSqliteTransaction | None:
    """A direct write on the sessions' SQLite database, or None where there is none to be had
    (another database, or a connection that is not :mod:`core.sqlite_driver`'s): the caller
    then uses a session as usual."""
    bind = sessions.kw.get("bind")
    if not isinstance(bind, AsyncEngine) or bind.dialect.name != "sqlite":
        return None
    pooled = await bind.raw_connection()
    driver = pooled.driver_connection
    if not isinstance(driver, OneTripConnection):
        await greenlet_spawn(pooled.close)
        return None
    return DirectSqliteTransaction(
        bind.dialect,
        functools.partial(sqlite_writers_queue, sessions),
        pooled,
        driver,
        group_commits(bind),
    )
