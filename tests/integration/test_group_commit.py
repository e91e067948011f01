"""SQLite commits waiting at the same moment go as one transaction, each with its own answer.

``core.sqlite_group_commit``: the optimistic units of work of one process (an approver's
decision) that wait for SQLite's write lock together are committed in one trip, one ``BEGIN
IMMEDIATE`` and one ``COMMIT``, each in a savepoint of its own. Whatever the mix, each must get
the answer it would have got alone (committed; its guarded row changed; its own error) and the
database must hold exactly what the commits one at a time would have left.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import cast

import pytest
import sqlalchemy.exc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from syncwarden.core import sqlite_group_commit
from syncwarden.core.db import create_engine, session_factory, write_transaction
from syncwarden.core.sqlite_driver import GroupedAnswer, GroupedCommit, one_trip_connector
from syncwarden.migrate import upgrade_to_head
from syncwarden.workflows.audit import AuditEvent
from syncwarden.workflows.records import Decision, Ticket
from syncwarden.workflows.ticket_rows import ticket_and_row_version
from syncwarden.workflows.unit_of_work import RowChangedError, UnitOfWork, UnitsOfWork
from tests.integration.test_optimistic_writes import A_DECISION, a_ticket
from tests.support.sqlite_trips import Trip, sqlite_trips

TICKETS = cast(Table, Ticket.__table__)
DECISIONS = cast(Table, Decision.__table__)


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/group.db")
    await upgrade_to_head(engine)
    yield engine
    await engine.dispose()


class HeldTurn:
    """The process's turn at SQLite's write lock, held by a task of its own until released:
    the optimistic commits that come meanwhile all wait, as they do behind a busy writer."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._holding = asyncio.Event()
        self._release = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> HeldTurn:
        self._task = asyncio.create_task(self._hold())
        await self._holding.wait()
        return self

    async def _hold(self) -> None:
        async with write_transaction(self._sessions):
            self._holding.set()
            await self._release.wait()

    async def __aexit__(self, *_exc: object) -> None:
        self._release.set()
        assert self._task is not None
        await self._task


class Arrivals:
    """Counts the units of work whose decision is made; their commit waits from that moment."""

    def __init__(self, expected: int) -> None:
        self._expected = expected
        self._seen = 0
        self.all_in = asyncio.Event()

    def arrived(self) -> None:
        # The unit's commit joins the waiting ones with no await in between: once the last has
        # arrived and the test runs again, every commit is waiting.
        self._seen += 1
        if self._seen == self._expected:
            self.all_in.set()


async def decide(
    work: UnitOfWork, ticket_id: int, arrivals: Arrivals, *, before: Callable[[], Awaitable[None]]
) -> None:
    """An approval's shape: read the ticket's version, update it guarded, and audit it."""
    async with work:
        _ticket, version = await ticket_and_row_version(work.rows, ticket_id)
        await before()
        work.update(TICKETS, ticket_id, {"status": "rejected"}, unchanged_since=version)
        work.audit(actor="approver", action="grouped", ticket_ref=f"SW-{ticket_id}")
        arrivals.arrived()


async def nothing() -> None:
    return None


def write_trips(trips: list[Trip]) -> list[list[str]]:
    return [trip.sql for trip in trips if trip.sql and trip.sql[0] == "BEGIN IMMEDIATE"]


async def audited(sessions: async_sessionmaker[AsyncSession]) -> list[str | None]:
    async with sessions() as session:
        refs = await session.scalars(
            select(AuditEvent.ticket_ref)
            .where(AuditEvent.action == "grouped")
            .order_by(AuditEvent.ticket_ref)
        )
        return list(refs.all())


async def statuses(sessions: async_sessionmaker[AsyncSession], ids: list[int]) -> list[str]:
    async with sessions() as session:
        found = await session.scalars(
            select(Ticket.status).where(Ticket.id.in_(ids)).order_by(Ticket.id)
        )
        return list(found.all())


async def test_commits_that_wait_together_go_in_one_transaction(
    sqlite_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions = session_factory(sqlite_engine)
    ids = [await a_ticket(sessions, f"person{n}@example.edu") for n in range(4)]
    units = UnitsOfWork(sessions)
    arrivals = Arrivals(len(ids))
    trips = sqlite_trips(monkeypatch)
    async with HeldTurn(sessions):
        clicks = [
            asyncio.create_task(decide(units.optimistic(), i, arrivals, before=nothing))
            for i in ids
        ]
        await arrivals.all_in.wait()
    await asyncio.gather(*clicks)

    [group] = write_trips(trips)
    assert group.count("SAVEPOINT grouped_commit") == len(ids)
    assert group.count("RELEASE grouped_commit") == len(ids)
    assert group[-1] == "COMMIT" and "ROLLBACK TO grouped_commit" not in group
    assert await statuses(sessions, ids) == ["rejected"] * len(ids)
    assert await audited(sessions) == sorted(f"SW-{i}" for i in ids)


async def test_a_commit_alone_is_sent_as_before_with_no_savepoint(
    sqlite_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions = session_factory(sqlite_engine)
    ticket_id = await a_ticket(sessions)
    trips = sqlite_trips(monkeypatch)
    await decide(UnitsOfWork(sessions).optimistic(), ticket_id, Arrivals(1), before=nothing)
    [alone] = write_trips(trips)
    assert alone[0] == "BEGIN IMMEDIATE" and alone[-1] == "COMMIT"
    assert not any("SAVEPOINT" in statement for statement in alone)
    assert await statuses(sessions, [ticket_id]) == ["rejected"]


async def test_in_a_group_each_commit_gets_its_own_answer_and_only_its_own(
    sqlite_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four decisions wait together: one whose ticket someone else changed while it decided,
    one whose write the database refuses, two that are fine. The first decides again, the
    second gets its IntegrityError, and the two fine ones are committed, as each would alone."""
    sessions = session_factory(sqlite_engine)
    stale, refused, fine, also_fine = [
        await a_ticket(sessions, f"person{n}@example.edu") for n in range(4)
    ]
    units = UnitsOfWork(sessions)
    arrivals = Arrivals(4)

    async def changed_meanwhile() -> None:
        # Another process's write: it does not queue behind this process's turn.
        with contextlib.closing(sqlite3.connect(str(sqlite_engine.url.database))) as other:
            other.execute("UPDATE tickets SET version = 7 WHERE id = ?", (stale,))
            other.commit()

    async def refused_decision() -> None:
        async with units.optimistic() as work:
            await ticket_and_row_version(work.rows, refused)
            work.audit(actor="approver", action="grouped", ticket_ref=f"SW-{refused}")
            work.insert(DECISIONS, {**A_DECISION, "ticket_id": refused + 1000})  # no such ticket
            arrivals.arrived()

    trips = sqlite_trips(monkeypatch)
    async with HeldTurn(sessions):
        clicks = [
            asyncio.create_task(
                decide(units.optimistic(), stale, arrivals, before=changed_meanwhile)
            ),
            asyncio.create_task(refused_decision()),
            asyncio.create_task(decide(units.optimistic(), fine, arrivals, before=nothing)),
            asyncio.create_task(decide(units.optimistic(), also_fine, arrivals, before=nothing)),
        ]
        await arrivals.all_in.wait()
    answers = await asyncio.gather(*clicks, return_exceptions=True)

    assert isinstance(answers[0], RowChangedError)
    assert isinstance(answers[1], sqlalchemy.exc.IntegrityError)
    assert answers[2:] == [None, None]
    assert await statuses(sessions, [stale, refused, fine, also_fine]) == [
        "awaiting_approval",
        "awaiting_approval",
        "rejected",
        "rejected",
    ]
    assert await audited(sessions) == sorted([f"SW-{fine}", f"SW-{also_fine}"])
    [group] = write_trips(trips)
    assert group.count("ROLLBACK TO grouped_commit") == 2


async def test_a_cancelled_commit_is_not_sent_and_the_others_still_are(
    sqlite_engine: AsyncEngine,
) -> None:
    """The first decision to wait is the one to send the group; cancelled while it waits for
    the turn (a Teams request given up, a shutdown), and another with it, the third still
    commits, alone, and the two cancelled ones write nothing."""
    sessions = session_factory(sqlite_engine)
    ids = [await a_ticket(sessions, f"person{n}@example.edu") for n in range(3)]
    units = UnitsOfWork(sessions)
    arrivals = Arrivals(len(ids))
    async with HeldTurn(sessions):
        clicks = [
            asyncio.create_task(decide(units.optimistic(), i, arrivals, before=nothing))
            for i in ids
        ]
        await arrivals.all_in.wait()
        for click in clicks[:2]:
            click.cancel()
        await asyncio.wait(clicks[:2])
    await asyncio.wait_for(clicks[2], timeout=30)  # a guard against a hang, not a wait for time
    assert all(click.cancelled() for click in clicks[:2])
    assert await statuses(sessions, ids) == ["awaiting_approval"] * 2 + ["rejected"]
    assert await audited(sessions) == [f"SW-{ids[2]}"]


async def test_a_group_is_never_larger_than_its_bound(
    sqlite_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the bound, the rest wait for the next trip; none is left behind."""
    monkeypatch.setattr(sqlite_group_commit, "MOST_IN_A_GROUP", 2)
    sessions = session_factory(sqlite_engine)
    ids = [await a_ticket(sessions, f"person{n}@example.edu") for n in range(5)]
    units = UnitsOfWork(sessions)
    arrivals = Arrivals(len(ids))
    trips = sqlite_trips(monkeypatch)
    async with HeldTurn(sessions):
        clicks = [
            asyncio.create_task(decide(units.optimistic(), i, arrivals, before=nothing))
            for i in ids
        ]
        await arrivals.all_in.wait()
    await asyncio.gather(*clicks)
    sizes = [group.count("SAVEPOINT grouped_commit") for group in write_trips(trips)]
    assert sizes == [2, 2, 0], "the last one alone: no savepoint"
    assert await statuses(sessions, ids) == ["rejected"] * len(ids)


# --- the driver's group itself, against the same commits made one at a time -----------------

SCHEMA = (
    "CREATE TABLE numbers (n INTEGER PRIMARY KEY, word TEXT NOT NULL, version INTEGER NOT NULL)",
    "CREATE TABLE changes (n INTEGER NOT NULL)",
    "INSERT INTO numbers VALUES (0, 'zero', 0), (1, 'one', 0), (2, 'two', 0)",
)
INSERT = "INSERT INTO numbers (n, word, version) VALUES (?, ?, 0)"
GUARDED = "UPDATE numbers SET word = ?, version = version + 1 WHERE n = ? AND version = ?"
NOTED = "INSERT INTO changes (n) VALUES (?)"

# A commit, as drawn: add rows (their numbers), or change a row if it is at a version.
Drawn = tuple[str, tuple[int, ...]]
COMMITS = st.one_of(
    st.tuples(st.just("add"), st.lists(st.integers(0, 6), min_size=1, max_size=3).map(tuple)),
    st.tuples(st.just("change"), st.tuples(st.integers(0, 3), st.integers(0, 2))),
)


def as_commit(drawn: Drawn) -> GroupedCommit:
    kind, numbers = drawn
    if kind == "add":
        return [(INSERT, [(n, f"word {n}") for n in numbers])], False
    n, version = numbers
    return [(GUARDED, [(f"changed {n}", n, version)]), (NOTED, [(n,)])], True


def one_at_a_time(drawn: list[Drawn]) -> tuple[list[str], dict[int, tuple[str, int]], list[int]]:
    """What the commits do one after another: each one's answer, the rows, the changes."""
    rows = {0: ("zero", 0), 1: ("one", 0), 2: ("two", 0)}
    answers: list[str] = []
    changes: list[int] = []
    for kind, numbers in drawn:
        if kind == "add":
            added = list(numbers)
            if len(set(added)) < len(added) or any(n in rows for n in added):
                answers.append("IntegrityError")
                continue
            rows.update({n: (f"word {n}", 0) for n in added})
            answers.append("committed")
            continue
        n, version = numbers
        if n not in rows or rows[n][1] != version:
            answers.append("row changed")
            continue
        rows[n] = (f"changed {n}", version + 1)
        changes.append(n)
        answers.append("committed")
    return answers, rows, changes


def named(answer: GroupedAnswer) -> str:
    if isinstance(answer, Exception):
        return type(answer).__name__
    return "committed" if answer else "row changed"


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(drawn=st.lists(COMMITS, min_size=1, max_size=8))
async def test_a_group_commits_exactly_what_one_commit_at_a_time_would(
    tmp_path_factory: pytest.TempPathFactory, drawn: list[Drawn]
) -> None:
    path = tmp_path_factory.mktemp("group") / "numbers.db"
    connection = await one_trip_connector((str(path),), {"isolation_level": None})()
    try:
        await connection.executescript(";".join(SCHEMA))
        answers = await connection.commit_group([as_commit(d) for d in drawn])
    finally:
        await connection.close()
    expected_answers, expected_rows, expected_changes = one_at_a_time(drawn)
    with contextlib.closing(sqlite3.connect(path)) as observer:
        rows = {
            n: (word, version) for n, word, version in observer.execute("SELECT * FROM numbers")
        }
        changes = [n for (n,) in observer.execute("SELECT n FROM changes ORDER BY rowid")]
    assert [named(answer) for answer in answers] == expected_answers
    assert rows == expected_rows
    assert changes == expected_changes


async def test_a_commit_that_fails_takes_the_whole_group_and_says_so_to_each(
    tmp_path: Path,
) -> None:
    """A check SQLite makes only at the COMMIT (a deferred foreign key): nothing of the group
    is committed, each commit that would have been is told the error, and one whose row had
    changed is still told that (it decides again either way)."""
    path = tmp_path / "deferred.db"
    connection = await one_trip_connector((str(path),), {"isolation_level": None})()
    try:
        await connection.executescript(
            "PRAGMA foreign_keys=ON;"
            "CREATE TABLE parents (id INTEGER PRIMARY KEY, version INTEGER NOT NULL);"
            "CREATE TABLE children (parent INTEGER REFERENCES parents (id)"
            " DEFERRABLE INITIALLY DEFERRED);"
            "INSERT INTO parents VALUES (1, 0);"
        )
        fine: GroupedCommit = [("INSERT INTO children VALUES (?)", [(1,)])], False
        orphan: GroupedCommit = [("INSERT INTO children VALUES (?)", [(99,)])], False
        stale: GroupedCommit = (
            [("UPDATE parents SET version = 1 WHERE id = ? AND version = ?", [(1, 5)])],
            True,
        )
        answers = await connection.commit_group([fine, stale, orphan])
        assert not connection.in_transaction
    finally:
        await connection.close()
    assert [named(answer) for answer in answers] == [
        "IntegrityError",
        "row changed",
        "IntegrityError",
    ]
    with contextlib.closing(sqlite3.connect(path)) as observer:
        assert observer.execute("SELECT count(*) FROM children").fetchone() == (0,)
