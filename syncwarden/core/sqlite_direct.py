"""An SQLite write transaction run on the driver's connection, without SQLAlchemy's session.

For a unit of work that reads with a few fixed statements and writes only rows it queued (an
approver's decision: see ``workflows.unit_of_work``). Around such a transaction SQLAlchemy's
session and connection did nothing the use case needed, yet cost an SQLite click about a
millisecond of CPU (measured 2026-12-03 on the development machine: 0.5 ms to set up the
session and its connection, 0.4 ms to execute the one read, 0.5 ms to commit and close), all of
it inside the process's turn at SQLite's write lock, where every other writer waits for it.

Here the transaction takes a connection from the engine's pool (and gives it back, reset, as a
session would), waits its turn in :func:`core.db.sqlite_writers_queue`, opens with ``BEGIN
IMMEDIATE`` in its first statement's trip, runs each read as SQL compiled once per statement,
its parameters and results passed through the same type processing SQLAlchemy applies, and
sends its writes with the ``COMMIT`` (:func:`core.sqlite_writes.commit_with_writes`), where its
turn passes to the next writer. sqlite3's errors are raised as SQLAlchemy's.
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
from syncwarden.core.sqlite_writes import commit_with_writes, trip_span
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
    """``BEGIN IMMEDIATE`` … reads … writes and ``COMMIT``, on one pooled connection; made by
    :func:`open_direct_transaction`, ended by :meth:`close`."""

    def __init__(
        self,
        dialect: Dialect,
        queue: AbstractAsyncContextManager[WriterTurn | None],
        pooled: PoolProxiedConnection,
        driver: OneTripConnection,
    ) -> None:
        self._dialect = dialect
        self._queue = queue
        self._pooled = pooled
        self._driver = driver
        self._done = False

    async def rows(
        self, statement: Select[Any], values: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        """The statement's rows, converted as SQLAlchemy converts them (times, JSON, booleans)."""
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

    async def commit(self, writes: Sequence[Write]) -> None:
        """``writes`` and ``COMMIT`` in one trip; the next writer's turn starts here."""
        await commit_with_writes(self._driver, self._dialect, writes)
        self._done = True
        await self._queue.__aexit__(None, None, None)

    async def close(self) -> None:
        """Roll back what was not committed, pass the turn on, give the connection back.

        A connection whose rollback failed is not given back as it is: the pool replaces it.
        """
        try:
            if not self._done:
                self._done = True
                try:
                    await self._driver.rollback()
                except BaseException:
                    await greenlet_spawn(self._pooled.invalidate)
                    raise
                finally:
                    await self._queue.__aexit__(None, None, None)
        finally:
            await greenlet_spawn(self._pooled.close)


async def open_direct_transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> DirectSqliteTransaction | None:
    """A direct write transaction on the sessions' SQLite database, or None where there is
    none to be had (another database, or a connection that is not
    :mod:`core.sqlite_driver`'s): the caller then uses a session as usual."""
    bind = sessions.kw.get("bind")
    if not isinstance(bind, AsyncEngine) or bind.dialect.name != "sqlite":
        return None
    queue = sqlite_writers_queue(sessions)
    await queue.__aenter__()
    try:
        pooled = await bind.raw_connection()
    except BaseException as error:
        await queue.__aexit__(type(error), error, error.__traceback__)
        raise
    driver = pooled.driver_connection
    if not isinstance(driver, OneTripConnection):
        await greenlet_spawn(pooled.close)
        await queue.__aexit__(None, None, None)
        return None
    driver.begin_with_next_statement("BEGIN IMMEDIATE")
    return DirectSqliteTransaction(bind.dialect, queue, pooled, driver)
