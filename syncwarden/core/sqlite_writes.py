"""A commit's writes sent to SQLite in one trip, with its ``COMMIT``.

Through SQLAlchemy each write of an approve click (the ticket, its decision, its steps, the
audit trail, the outbox) was an execution of its own and a trip of its own to aiosqlite's
thread, and the ``COMMIT`` one more; on SQLite that was most of a click's CPU beyond what the
same click costs on PostgreSQL, where they are one statement (:mod:`core.combined_writes`).
Here the writes are plain SQL built once per shape (table, columns, conflict column), their
values bound as SQLAlchemy would bind them (:mod:`core.row_writes`), and run with the ``COMMIT``
in one trip (:meth:`core.sqlite_driver.OneTripConnection.write_and_commit`).

What SQLAlchemy did on the way is done here too: an error is raised as SQLAlchemy's own
(``IntegrityError`` for a duplicate key, which callers rely on), and with tracing on, the trip
gets a span naming its statements.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from opentelemetry.trace import SpanKind, Status, StatusCode
from sqlalchemy import exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

from syncwarden.core.row_writes import (
    ROW_VERSION,
    RowUpdate,
    Write,
    guarded_first,
    is_guarded,
    table_facts,
)
from syncwarden.core.sqlite_driver import OneTripConnection
from syncwarden.core.tracing import tracer, tracing_installed

# The SQL of one write: what it depends on (update or insert, the table's name, its columns, and
# the column whose conflicts an insert skips or the version column an update is guarded by),
# never the values or how many rows.
_Shape = tuple[str, str, tuple[str, ...], str | None]
_SQL: dict[_Shape, str] = {}


async def write_and_commit(session: AsyncSession, writes: Sequence[Write]) -> bool | None:
    """Run ``writes`` and commit the session's transaction, in one trip to SQLite's thread.

    None, having done nothing, when that cannot be done here (the connection is not
    :mod:`core.sqlite_driver`'s, or the session is inside a savepoint): the caller then writes
    one statement at a time. Otherwise the transaction has ended in SQLite, and the caller's
    ``session.commit()`` must come next, making no trip: True when it was committed, False when
    an update guarded by ``unchanged_since`` found its row changed and it was rolled back.
    """
    if session.in_nested_transaction():
        return None
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    if not isinstance(driver, OneTripConnection):
        return None
    return await commit_with_writes(driver, connection.dialect, writes)


async def commit_with_writes(
    driver: OneTripConnection, dialect: Dialect, writes: Sequence[Write]
) -> bool:
    """``writes``, then ``COMMIT``, on ``driver``'s open transaction, in one trip; sqlite3's
    errors raised as SQLAlchemy's. A failure leaves the transaction open for a rollback.

    An update guarded by ``unchanged_since`` runs first; if its row changed, the transaction is
    rolled back in the same trip, with nothing written, and the answer is False.
    """
    statements, guarded = prepared_writes(writes, dialect)
    with commit_trip(statements):
        return await driver.write_and_commit(statements, first_must_change=guarded)


def prepared_writes(
    writes: Sequence[Write], dialect: Dialect
) -> tuple[list[tuple[str, list[tuple[Any, ...]]]], bool]:
    """Each write's SQL and bound rows, a guarded update first; and whether there is one."""
    ordered = guarded_first(writes)
    guarded = bool(ordered) and is_guarded(ordered[0])
    return [_statement(write, dialect) for write in ordered], guarded


@contextlib.contextmanager
def commit_trip(statements: Sequence[tuple[str, Any]]) -> Iterator[None]:
    """Around a trip that runs ``statements`` and commits: sqlite3's errors raised as
    SQLAlchemy's (``IntegrityError`` for a duplicate key, which callers rely on), and with
    tracing on, a span naming the statements."""
    span = (
        trip_span("db COMMIT", "; ".join(sql for sql, _rows in statements))
        if tracing_installed()
        else None
    )
    try:
        yield
    except sqlite3.Error as error:
        if span is not None:
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        sql = "; ".join(sql for sql, _rows in statements)
        raise exc.DBAPIError.instance(sql, None, error, sqlite3.Error) from error
    finally:
        if span is not None:
            span.end()


def _statement(write: Write, dialect: Dialect) -> tuple[str, list[tuple[Any, ...]]]:
    """The write's SQL and one tuple of bound values per row."""
    facts = table_facts(write.table, dialect)
    if isinstance(write, RowUpdate):
        values = {**facts.onupdates(write.values), **write.values}
        columns = tuple(sorted(values))
        guard = None if write.unchanged_since is None else ROW_VERSION
        sql = _sql(("update", write.table.name, columns, guard), dialect)
        row = (*facts.binder(columns)(values), write.row_id)
        if write.unchanged_since is not None:
            row = (*row, write.unchanged_since)
        return sql, [row]
    rows = [{**facts.defaults(row), **row} for row in write.rows]
    columns = tuple(sorted(rows[0]))
    sql = _sql(("insert", write.table.name, columns, write.ignore_conflicts_on), dialect)
    bind = facts.binder(columns)
    return sql, [bind(row) for row in rows]


def _sql(shape: _Shape, dialect: Dialect) -> str:
    known = _SQL.get(shape)
    if known is not None:
        return known
    kind, table, columns, extra = shape
    # Only names from the tables' metadata reach the SQL (every column was looked up in its
    # table's facts), quoted by the dialect; the values are all parameters.
    quote = dialect.identifier_preparer.quote
    if kind == "update":
        sets = ", ".join(f"{quote(name)} = ?" for name in columns)
        sql = f"UPDATE {quote(table)} SET {sets} WHERE id = ?"  # noqa: S608
        if extra is not None:
            sql += f" AND {quote(extra)} = ?"
    else:
        names = ", ".join(quote(name) for name in columns)
        marks = ", ".join("?" for _ in columns)
        sql = f"INSERT INTO {quote(table)} ({names}) VALUES ({marks})"  # noqa: S608
        if extra is not None:
            sql += f" ON CONFLICT ({quote(extra)}) DO NOTHING"
    _SQL[shape] = sql
    return sql


def trip_span(name: str, sql: str) -> Any:
    """One span for a trip (its SQL, never its values), as ``db._trace_statements`` makes one
    per statement that SQLAlchemy runs."""
    return tracer.start_span(
        name,
        kind=SpanKind.CLIENT,
        attributes={"db.system": "sqlite", "db.statement": sql[:2000]},
    )
