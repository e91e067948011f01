"""The SQLite driver: one trip to aiosqlite's thread per statement, every row still delivered,
and a statement that waits for SQLite's write lock waiting on that thread, not the event loop."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from syncwarden.core import sqlite_driver
from syncwarden.core.db import create_engine
from syncwarden.core.sqlite_driver import OneTripConnection, one_trip_connector


def counted_trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every call sent to aiosqlite's thread from now on, by name."""
    trips: list[str] = []
    original = cast(Any, OneTripConnection._execute)

    async def counting(self: OneTripConnection, call: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(getattr(call, "__name__", repr(call)))
        return await original(self, call, *args, **kwargs)

    monkeypatch.setattr(OneTripConnection, "_execute", counting)
    return trips


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
            trips = counted_trips(monkeypatch)
            inserted = await connection.execute(
                text("INSERT INTO numbers (n, word) VALUES (:n, :w)"), {"n": 1, "w": "one"}
            )
            rows = (await connection.execute(text("SELECT n, word FROM numbers"))).all()
            statements = list(trips)  # leaving the block adds the rollback's trip
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
