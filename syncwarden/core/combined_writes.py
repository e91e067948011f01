"""A commit's writes sent to PostgreSQL as one statement.

An approve click writes five tables (the ticket, its decision, its steps, the audit trail and
the outbox). One statement each is a round trip each, and on a turn whose own work is small the
round trips were most of its CPU: each pays SQLAlchemy's execution path and a socket send. On
PostgreSQL a data-modifying ``WITH`` runs several ``INSERT`` and ``UPDATE`` statements as one,
all or none, each sub-statement once whether or not anything reads its result
(https://www.postgresql.org/docs/current/queries-with.html#QUERIES-WITH-MODIFYING).

The rows travel as one array per column, unpacked by ``unnest``, so the SQL depends only on
which tables and columns are written, never on how many rows: built and prepared once per shape,
not compiled again for every click. Each value goes through its column type's own bind
processing first (JSON serialised, times made UTC), as the ORM would send it, and columns a row
leaves out get their Python-side defaults, as ``insert(table)`` gives them.

SQLite runs the same writes in the trip of the transaction's ``COMMIT``
(:mod:`core.sqlite_writes`), or one statement at a time (:func:`run_one_by_one`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Column, Table, insert, text, update
from sqlalchemy.engine import CursorResult, Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import TextClause

from syncwarden.core.db import insert_ignoring
from syncwarden.core.row_writes import (
    ROW_VERSION,
    RowsInsert,
    RowUpdate,
    Write,
    guarded_first,
    is_guarded,
    table_facts,
)
from syncwarden.core.sqlite_writes import write_and_commit


async def run_writes(
    session: AsyncSession, writes: Sequence[Write], *, commit_next: bool = False
) -> bool:
    """Run ``writes`` in the session's transaction: one statement on PostgreSQL.

    ``commit_next``: the caller commits the session straight after, with nothing in between.
    On SQLite the writes and the ``COMMIT`` then go together in one trip
    (:mod:`core.sqlite_writes`), and the session's commit only ends SQLAlchemy's side of it.

    The parts of one data-modifying ``WITH`` run against the same snapshot in no defined order,
    so no write may depend on another's effect (each updates its own row or inserts new ones);
    a change the others must see belongs in the session, which is flushed before.

    False when an update's row changed since ``unchanged_since``: then nothing was written.
    """
    writes = [w for w in writes if not isinstance(w, RowsInsert) or w.rows]
    if not writes:
        return True
    dialect = session.get_bind().dialect
    if dialect.name == "sqlite" and commit_next:
        held = await write_and_commit(session, writes)
        if held is not None:
            return held
    guarded = any(is_guarded(w) for w in writes)
    if dialect.name != "postgresql" or (len(writes) == 1 and not guarded):
        return await run_one_by_one(session, writes)
    statement, parameters = combined(dialect, writes)
    result = await session.execute(statement, parameters)
    return bool(result.scalar()) if guarded else True


async def run_one_by_one(session: AsyncSession, writes: Sequence[Write]) -> bool:
    """Each write its own statement, the guarded update first (:func:`guarded_first`) and
    nothing after it if its row changed (then False).

    For SQLite's transactions, which hold the write lock from their first statement, so no
    one can change the guarded row between its update and the writes that follow it.
    """
    for write in guarded_first(writes):
        if isinstance(write, RowUpdate):
            table = write.table
            statement = update(table).where(table.c.id == write.row_id).values(write.values)
            if write.unchanged_since is None:
                await session.execute(statement)
                continue
            guarded = statement.where(table.c[ROW_VERSION] == write.unchanged_since)
            result = cast(CursorResult[Any], await session.execute(guarded))
            if result.rowcount != 1:
                return False
        elif write.ignore_conflicts_on is not None:
            dialect = session.get_bind().dialect.name
            ignoring = insert_ignoring(dialect, write.table.name, write.ignore_conflicts_on)
            await session.execute(ignoring, list(write.rows))
        else:
            await session.execute(insert(write.table), list(write.rows))
    return True


def combined(dialect: Dialect, writes: Sequence[Write]) -> tuple[TextClause, dict[str, Any]]:
    """The one statement and its parameters: every write but the last in a ``WITH``, or, when
    an update is guarded by its row's version (at most one: :func:`guarded_first`), every
    write in the ``WITH``, each done only if the guarded row was found unchanged, and a
    ``SELECT`` of whether it was.
    """
    # The guarded update first: the parts of a WITH can refer only to those before them.
    writes = guarded_first(writes)
    shape: list[_Part] = []
    parameters: dict[str, Any] = {}
    for number, write in enumerate(writes):
        prefix = f"w{number}_"
        facts = table_facts(write.table, dialect)
        if isinstance(write, RowUpdate):
            values = {**facts.onupdates(write.values), **write.values}
            columns = tuple(sorted(values))
            guard = None if write.unchanged_since is None else ROW_VERSION
            shape.append(("update", write.table, columns, guard))
            for name in columns:
                parameters[prefix + name] = facts.bound(name, values[name])
            parameters[prefix + "id"] = write.row_id
            if guard is not None:
                parameters[prefix + "expected_version"] = write.unchanged_since
        else:
            rows = [{**facts.defaults(row), **row} for row in write.rows]
            columns = tuple(sorted(rows[0]))
            shape.append(("insert", write.table, columns, write.ignore_conflicts_on))
            for name in columns:
                parameters[prefix + name] = [facts.bound(name, row[name]) for row in rows]
    return _statement(tuple(shape), dialect), parameters


# What a statement's SQL depends on, per write: update or insert, the table, its columns, and the
# column whose conflicts an insert ignores (an insert) or the row version it expects (an update).
_Part = tuple[str, Table, tuple[str, ...], str | None]
_STATEMENTS: dict[tuple[_Part, ...], TextClause] = {}


def _statement(shape: tuple[_Part, ...], dialect: Dialect) -> TextClause:
    known = _STATEMENTS.get(shape)
    if known is not None:
        return known
    # Only names from the tables' metadata reach the SQL (every column was looked up in its
    # table), quoted by the dialect; the values are all parameters.
    quote = dialect.identifier_preparer.quote
    guarded = [n for n, (kind, *_, guard) in enumerate(shape) if kind == "update" and guard]
    # Every part runs, referenced or not; the guarded update RETURNs its row when it found it
    # unchanged, and every other part writes only if it did. (Names are w0, w1...: no input.)
    held = " AND ".join(f"EXISTS (SELECT 1 FROM w{number})" for number in guarded)  # noqa: S608
    parts = []
    for number, (kind, table, columns, extra) in enumerate(shape):
        prefix = f"w{number}_"
        if kind == "update":
            sets = ", ".join(f"{quote(name)} = :{prefix}{name}" for name in columns)
            sql = f"UPDATE {quote(table.name)} SET {sets} WHERE id = :{prefix}id"  # noqa: S608
            if extra is not None:
                sql += f" AND {quote(extra)} = :{prefix}expected_version RETURNING id"
            elif held:
                sql += f" AND {held}"
            parts.append(sql)
        else:
            arrays = ", ".join(
                f"CAST(:{prefix}{name} AS {_array_type(table.c[name], dialect)})"
                for name in columns
            )
            names = ", ".join(quote(name) for name in columns)
            sql = f"INSERT INTO {quote(table.name)} ({names}) SELECT * FROM unnest({arrays})"  # noqa: S608
            if held:
                sql += f" WHERE {held}"
            if extra is not None:
                sql += f" ON CONFLICT ({quote(extra)}) DO NOTHING"
            parts.append(sql)
    if held:
        leading, last = parts, f"SELECT {held}"
    else:
        *leading, last = parts
    with_ = ", ".join(f"w{number} AS ({sql})" for number, sql in enumerate(leading))
    statement = text(f"WITH {with_} {last}" if leading else last)
    _STATEMENTS[shape] = statement
    return statement


def _array_type(column: Column[Any], dialect: Dialect) -> str:
    return f"{column.type.compile(dialect=dialect)}[]"
