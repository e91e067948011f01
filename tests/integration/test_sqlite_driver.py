"""The SQLite driver: one trip to aiosqlite's thread per statement, every row still delivered,
and a statement that waits for SQLite's write lock waiting on that thread, not the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Column, Integer, MetaData, Table, Text, exc, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.core import sqlite_driver
from syncwarden.core.combined_writes import run_writes
from syncwarden.core.db import create_engine, ping, session_factory, write_transaction
from syncwarden.core.row_writes import RowsInsert
from syncwarden.core.sqlite_driver import one_trip_connector
from tests.support.sqlite_trips import sqlite_trips


@pytest.fixture
async def database(tmp_path: Path) -> Path:
    path = tmp_path / "driver.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE numbers (n INTEGER PRIMARY KEY, word TEXT)"))
    await engine.dispose()
    return path


async def test_a_statement_and_its_rows_are_one_trip(
    database: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{database}")
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))  # the connection and its first BEGIN
            trips = sqlite_trips(monkeypatch)
            inserted = await connection.execute(
                text("INSERT INTO numbers (n, word) VALUES (:n, :w)"), {"n": 1, "w": "one"}
            )
            rows = (await connection.execute(text("SELECT n, word FROM numbers"))).all()
            statements = [trip.name for trip in trips]  # leaving adds the rollback's
        assert inserted.rowcount == 1
        assert [tuple(r) for r in rows] == [(1, "one")]
        assert statements == ["_run", "_run"], "aiosqlite's own cursor took four trips a statement"
    finally:
        await engine.dispose()


async def test_results_larger_than_the_first_fetch_arrive_whole_and_stream(
    database: Path,
) -> None:
    many = sqlite_driver.FIRST_ROWS * 2 + 17
    engine = create_engine(f"sqlite+aiosqlite:///{database}")
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text("INSERT INTO numbers (n, word) VALUES (:n, :w)"),
                [{"n": n, "w": f"w{n}"} for n in range(many)],
            )
        async with engine.connect() as connection:
            whole = (await connection.execute(text("SELECT n FROM numbers ORDER BY n"))).all()
            streamed = [
                row.n
                async for row in await connection.stream(
                    text("SELECT n FROM numbers ORDER BY n").execution_options(yield_per=300)
                )
            ]
        assert [r.n for r in whole] == list(range(many))
        assert streamed == list(range(many))
    finally:
        await engine.dispose()


FETCH = st.one_of(
    st.just(("one", 0)),
    st.tuples(st.just("many"), st.integers(min_value=1, max_value=7)),
    st.just(("many", None)),
    st.just(("all", 0)),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.integers(min_value=0, max_value=20), fetches=st.lists(FETCH, max_size=12))
async def test_any_mix_of_fetches_returns_each_row_once_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: int, fetches: list[tuple[str, Any]]
) -> None:
    """Whatever SQLAlchemy (or a stream) asks for, in whatever sizes, the rows come once each,
    in order, across the edge of the first fetch (made small here: 4 rows)."""
    monkeypatch.setattr(sqlite_driver, "FIRST_ROWS", 4)
    connect = one_trip_connector((str(tmp_path / "fetches.db"),), {})
    connection = await connect()
    try:
        cursor = await connection.cursor()
        await cursor.execute(
            "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < ?) "
            "SELECT n FROM c WHERE ? > 0",
            (max(rows, 1), rows),
        )
        got: list[int] = []
        for kind, size in fetches:
            if kind == "one":
                row = await cursor.fetchone()
                got += [] if row is None else [row[0]]
            elif kind == "many":
                got += [r[0] for r in await cursor.fetchmany(size)]
            else:
                got += [r[0] for r in await cursor.fetchall()]
        got += [r[0] for r in await cursor.fetchall()]
        assert got == list(range(1, rows + 1))
        await cursor.close()
    finally:
        await connection.close()


async def test_a_write_waiting_for_the_lock_leaves_the_event_loop_free(database: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{database}")
    holder = sqlite3.connect(database, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock

        async def write() -> None:
            async with engine.begin() as connection:
                await connection.execute(text("INSERT INTO numbers (n, word) VALUES (7, 'x')"))

        waiting = asyncio.ensure_future(write())
        # Were the wait on the event loop's thread, this timeout could not fire at all.
        done, _ = await asyncio.wait({waiting}, timeout=0.5)
        assert done == set(), "the write finished while another connection held the lock"
        holder.execute("COMMIT")
        await waiting
        assert holder.execute("SELECT word FROM numbers WHERE n = 7").fetchall() == [("x",)]
    finally:
        holder.close()
        await engine.dispose()


@pytest.fixture
async def engine(database: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on ``database`` whose pooled connection is already open."""
    engine = create_engine(f"sqlite+aiosqlite:///{database}")
    await ping(engine)
    yield engine
    await engine.dispose()


NUMBERS = Table("numbers", MetaData(), Column("n", Integer, primary_key=True), Column("word", Text))


def counted(path: Path) -> int:
    """Rows another connection sees: only what has been committed."""
    with contextlib.closing(sqlite3.connect(path)) as observer:
        (count,) = observer.execute("SELECT count(*) FROM numbers").fetchone()
    return int(count)


async def test_a_transaction_begins_in_the_trip_of_its_first_statement(
    engine: AsyncEngine, database: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips = sqlite_trips(monkeypatch)
    async with engine.begin() as connection:
        await connection.execute(text("INSERT INTO numbers (n, word) VALUES (1, 'one')"))
        before_commit = counted(database)
    assert (before_commit, counted(database)) == (0, 1), "the insert waited for the commit"
    assert [(trip.name, trip.sql) for trip in trips] == [
        ("_run", ["BEGIN", "INSERT INTO numbers (n, word) VALUES (1, 'one')"]),
        ("commit", ["COMMIT"]),
    ]


async def test_a_transaction_that_ran_nothing_ends_without_a_trip(
    engine: AsyncEngine, database: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions = session_factory(engine)
    trips = sqlite_trips(monkeypatch)
    async with engine.begin():
        pass
    async with write_transaction(sessions):
        pass
    async with engine.begin() as connection:  # the connection is as good as before
        await connection.execute(text("INSERT INTO numbers (n, word) VALUES (2, 'two')"))
    assert [trip.name for trip in trips] == ["_run", "commit"]
    assert counted(database) == 1


async def test_a_write_transaction_takes_the_write_lock_before_its_first_read(
    engine: AsyncEngine, database: Path
) -> None:
    """``BEGIN IMMEDIATE`` still comes before the read, so a read-then-write cannot find the
    lock taken by someone else between its read and its write."""
    sessions = session_factory(engine)

    async def read_to_write() -> int:
        async with write_transaction(sessions) as session:
            return len((await session.execute(select(NUMBERS))).all())

    async def read_only() -> int:
        async with sessions() as session:
            return len((await session.execute(select(NUMBERS))).all())

    with contextlib.closing(sqlite3.connect(database, isolation_level=None)) as holder:
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        assert await read_only() == 0, "a plain read does not wait for the write lock"
        waiting = asyncio.ensure_future(read_to_write())
        done, _ = await asyncio.wait({waiting}, timeout=0.5)
        assert done == set(), "the read ran while another connection held the write lock"
        holder.execute("INSERT INTO numbers (n, word) VALUES (3, 'three')")
        holder.execute("COMMIT")
        assert await waiting == 1, "it read after the other writer committed"


async def test_the_last_writes_go_with_the_commit_in_one_trip(
    engine: AsyncEngine, database: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions = session_factory(engine)
    trips = sqlite_trips(monkeypatch)
    async with write_transaction(sessions) as session:
        await session.execute(select(NUMBERS))
        writes = [RowsInsert(NUMBERS, [{"n": 1, "word": "one"}, {"n": 2, "word": "two"}])]
        await run_writes(session, writes, commit_next=True)
    assert [(trip.name, trip.sql) for trip in trips] == [
        ("_run", ["BEGIN IMMEDIATE", "SELECT numbers.n, numbers.word \nFROM numbers"]),
        (
            "run",
            [
                "INSERT INTO numbers (n, word) VALUES (1, 'one')",
                "INSERT INTO numbers (n, word) VALUES (2, 'two')",
                "COMMIT",
            ],
        ),
    ]
    assert counted(database) == 2


async def test_a_failed_write_in_the_commits_trip_is_sqlalchemys_error_and_leaves_nothing(
    engine: AsyncEngine, database: Path
) -> None:
    sessions = session_factory(engine)
    writes = [
        RowsInsert(NUMBERS, [{"n": 5, "word": "five"}]),
        RowsInsert(NUMBERS, [{"n": 6, "word": "six"}, {"n": 6, "word": "again"}]),
    ]
    with pytest.raises(exc.IntegrityError) as raised:
        async with write_transaction(sessions) as session:
            await run_writes(session, writes, commit_next=True)
    assert isinstance(raised.value.orig, sqlite3.IntegrityError)
    assert counted(database) == 0, "the writes before the failed one were rolled back"
    async with write_transaction(sessions) as session:  # and the connection works on
        await run_writes(session, writes[:1], commit_next=True)
    assert counted(database) == 1
