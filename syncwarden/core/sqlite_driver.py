"""aiosqlite with one trip to its thread per statement instead of three or four.

aiosqlite runs every call of the sqlite3 driver on a thread of its own, each call a trip there
and back: a queue put, a thread woken, the answer handed to the event loop through its wake-up
pipe. SQLAlchemy asks for a cursor, executes, fetches and closes, so each statement cost four
trips, and on the development machine a trip costs about as much CPU as SQLite's own work for
a small statement: most of an SQLite approve click was spent travelling.

Here a cursor is made on the event loop's thread (an in-memory object; the connection is opened
with ``check_same_thread=False``, and SQLAlchemy hands a connection to one user at a time),
``execute`` fetches the first rows in the same trip, and closing needs no trip. Everything else,
including the statement itself, still runs on aiosqlite's thread, so a statement that waits for
SQLite's write lock never blocks the event loop.

A transaction costs no trips of its own either. Its ``BEGIN`` waits and goes with its first
statement (:meth:`OneTripConnection.begin_with_next_statement`), and a commit's last writes can
go with its ``COMMIT`` (:meth:`OneTripConnection.write_and_commit`). An approve click, a locked
read and five writes, is then two trips, as it is two round trips on PostgreSQL.

This leans on aiosqlite's ``Connection._execute`` and ``_conn``, hence the narrow version range
in ``pyproject.toml``; ``tests/integration/test_sqlite_driver.py`` pins the trips and the rows.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from typing import Any, TypeVar, cast

import aiosqlite

T = TypeVar("T")
Parameters = Sequence[Any] | Mapping[str, Any]

# sqlite3.threadsafety when SQLite serialises all use of a connection itself: the only build in
# which this driver is used, since it makes and closes cursors off aiosqlite's thread (never
# while a statement of the same connection runs, but SQLite's own mutex makes sure).
SERIALIZED = 3

# Rows fetched in the statement's own trip. A result no larger arrives with it; a larger one
# (an audit export streamed with ``yield_per``) comes on in further trips, so a stream is
# never held in memory whole.
FIRST_ROWS = 1000


class OneTripCursor(aiosqlite.Cursor):
    """An aiosqlite cursor whose ``execute`` brings the first rows back with it."""

    def __init__(self, conn: aiosqlite.Connection, cursor: sqlite3.Cursor) -> None:
        super().__init__(conn, cursor)
        self._rows: deque[Any] = deque()
        self._more = False

    def __await__(self) -> Generator[Any, None, OneTripCursor]:
        """``await connection.cursor()`` works as with aiosqlite's own cursor."""
        return self._itself().__await__()

    async def _itself(self) -> OneTripCursor:
        return self

    async def _on_thread(self, call: Callable[..., T], *arguments: Any) -> T:
        """``call(*arguments)`` on aiosqlite's thread: one trip."""
        result: T = await self._execute(call, *arguments)  # type: ignore[no-untyped-call]
        return result

    def _run(self, begin: str | None, sql: str, parameters: Parameters) -> tuple[list[Any], bool]:
        """On aiosqlite's thread: the transaction's ``BEGIN`` if it waits, the statement and its
        first rows."""
        if begin is not None:
            self._cursor.execute(begin)
        self._cursor.execute(sql, parameters)
        if self._cursor.description is None:
            return [], False
        rows = self._cursor.fetchmany(FIRST_ROWS)
        return rows, len(rows) == FIRST_ROWS

    async def execute(self, sql: str, parameters: Iterable[Any] | None = None) -> OneTripCursor:
        given: Parameters = [] if parameters is None else parameters  # type: ignore[assignment]
        begin = self._connection.take_begin()
        rows, self._more = await self._on_thread(self._run, begin, sql, given)
        self._rows = deque(rows)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Iterable[Any]]) -> OneTripCursor:
        self._rows, self._more = deque(), False
        begin = self._connection.take_begin()
        await self._on_thread(self._run_many, begin, sql, cast(Iterable[Parameters], parameters))
        return self

    def _run_many(self, begin: str | None, sql: str, parameters: Iterable[Parameters]) -> None:
        if begin is not None:
            self._cursor.execute(begin)
        self._cursor.executemany(sql, parameters)

    @property
    def _connection(self) -> OneTripConnection:
        return cast(OneTripConnection, self._conn)

    async def fetchone(self) -> Any:
        if not self._rows and self._more:
            await self._fetch_more(FIRST_ROWS)
        return self._rows.popleft() if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        wanted = self._cursor.arraysize if size is None else size
        if len(self._rows) < wanted and self._more:
            await self._fetch_more(max(wanted - len(self._rows), FIRST_ROWS))
        return [self._rows.popleft() for _ in range(min(wanted, len(self._rows)))]

    async def fetchall(self) -> list[Any]:
        rows = list(self._rows)
        self._rows.clear()
        if self._more:
            rows += await self._on_thread(self._cursor.fetchall)
            self._more = False
        return rows

    async def _fetch_more(self, size: int) -> None:
        rows = await self._on_thread(self._cursor.fetchmany, size)
        self._more = len(rows) == size
        self._rows.extend(rows)

    async def close(self) -> None:
        self._rows.clear()
        self._more = False
        self._cursor.close()


class OneTripConnection(aiosqlite.Connection):
    """An aiosqlite connection whose cursors are :class:`OneTripCursor` s, made without a trip,
    and whose transactions take no trips of their own."""

    _begin: str | None = None  # the transaction's BEGIN, until its first statement takes it
    _after_write_and_commit: Callable[[], None] | None = None

    def cursor(self) -> OneTripCursor:  # type: ignore[override]
        return OneTripCursor(self, self._conn.cursor())

    def begin_with_next_statement(self, begin: str) -> None:
        """Open a transaction with ``begin`` (``BEGIN``, ``BEGIN IMMEDIATE``) in the trip of
        the next statement instead of a trip now.

        Nothing is lost by waiting: the transaction has seen nothing and locked nothing until
        its first statement, and ``BEGIN IMMEDIATE``, which waits for the write lock, still
        waits before that statement runs, on aiosqlite's thread. A transaction that ends before
        any statement was never opened, so its commit or rollback has nothing to do.
        """
        if self._begin is not None or self._conn.in_transaction:
            raise RuntimeError("a transaction is already open on this connection")
        self._begin = begin

    def take_begin(self) -> str | None:
        """The transaction's ``BEGIN``, for the trip of its first statement; None after that."""
        begin, self._begin = self._begin, None
        return begin

    async def write_and_commit(
        self,
        writes: Sequence[tuple[str, Sequence[Parameters]]],
        *,
        first_must_change: bool = False,
    ) -> bool:
        """Run each ``(sql, rows)`` (the statement once per row) and then ``COMMIT``, in one trip.

        The transaction then has ended, and the ``commit()`` that SQLAlchemy sends next finds
        nothing to commit, so it makes no trip. A statement that fails leaves the transaction
        open with what ran before it, for the caller's rollback, exactly as one statement at a
        time would; the error is sqlite3's own (see :mod:`core.sqlite_writes`).

        ``first_must_change``: the first statement is a guarded update of one row; if it changed
        no row, the rest are not run, the transaction is rolled back in the same trip, and the
        answer is False (True otherwise).
        """
        begin = self.take_begin()

        def run() -> bool:
            cursor = self._conn.cursor()
            try:
                if begin is not None:
                    cursor.execute(begin)
                if not _run_writes(cursor, (writes, first_must_change)):
                    cursor.execute("ROLLBACK")
                    return False
                cursor.execute("COMMIT")
                return True
            finally:
                cursor.close()

        held: bool = await self._execute(run)  # type: ignore[no-untyped-call]
        committed, self._after_write_and_commit = self._after_write_and_commit, None
        if committed is not None:
            committed()
        return held

    async def commit_group(self, commits: Sequence[GroupedCommit]) -> list[GroupedAnswer]:
        """Several commits' writes in one transaction and one trip: ``BEGIN IMMEDIATE``, each
        commit's writes, ``COMMIT``; one answer per commit, as :meth:`write_and_commit` gives.

        Each commit is its own savepoint when there are several: one whose guarded update
        changed no row (False) or whose writes failed (its error, as the answer) is rolled back
        to its savepoint, and the others are committed without it. A single commit is sent with
        no savepoint, as :meth:`write_and_commit` sends one, but rolled back in the same trip
        when it fails. When the ``COMMIT`` fails, that error is the answer of every commit that
        would have been committed; when anything else fails (the ``BEGIN``, a savepoint),
        nothing is committed and the error is raised.
        """

        def run() -> list[GroupedAnswer]:
            cursor = self._conn.cursor()
            try:
                return _run_group(cursor, commits)
            except BaseException:
                if self._conn.in_transaction:
                    cursor.execute("ROLLBACK")
                raise
            finally:
                cursor.close()

        answers: list[GroupedAnswer] = await self._execute(run)  # type: ignore[no-untyped-call]
        return answers

    def after_write_and_commit(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` once, on the event loop's thread, the moment the next
        :meth:`write_and_commit` has committed; None forgets it.

        For whoever holds the process's turn at SQLite's write lock (``core.db``): that commit
        ends the transaction, so the next writer can start while SQLAlchemy is still doing its
        bookkeeping for this one. Only this commit, never a plain ``commit()``: code that
        commits halfway through a transaction and goes on writing must keep its turn.
        """
        self._after_write_and_commit = callback

    async def commit(self) -> None:
        if self._transaction_open():
            await super().commit()

    async def rollback(self) -> None:
        """Also what SQLAlchemy's pool sends when a connection comes back after a commit: a trip
        for nothing, before, on every transaction."""
        if self._transaction_open():
            await super().rollback()

    def _transaction_open(self) -> bool:
        """Whether SQLite has a transaction open here; a ``BEGIN`` still waiting for its first
        statement is dropped (that transaction never began).

        Read on the event loop's thread: SQLAlchemy ends a transaction only between statements,
        never while one of this connection's runs on aiosqlite's thread.
        """
        self._begin = None
        return bool(self._conn.in_transaction)


# One commit of a group (:meth:`OneTripConnection.commit_group`): its writes, each ``(sql, rows)``
# with the statement run once per row, and whether the first is a guarded update of one row.
GroupedCommit = tuple[Sequence[tuple[str, Sequence[Parameters]]], bool]
# Its answer: committed (True), its guarded row changed (False), or the error its writes met.
GroupedAnswer = bool | Exception


def _run_writes(cursor: sqlite3.Cursor, commit: GroupedCommit) -> bool:
    """A commit's writes; False, having stopped, when its guarded update changed no row."""
    writes, guarded = commit
    for number, (sql, rows) in enumerate(writes):
        cursor.executemany(sql, rows)
        if number == 0 and guarded and cursor.rowcount != 1:
            return False
    return True


def _run_group(cursor: sqlite3.Cursor, commits: Sequence[GroupedCommit]) -> list[GroupedAnswer]:
    """On aiosqlite's thread: see :meth:`OneTripConnection.commit_group`."""
    cursor.execute("BEGIN IMMEDIATE")
    alone = len(commits) == 1
    answers: list[GroupedAnswer] = []
    for commit in commits:
        if not alone:
            cursor.execute("SAVEPOINT grouped_commit")
        answer: GroupedAnswer
        try:
            answer = _run_writes(cursor, commit)
        except Exception as error:  # this commit's own: a duplicate key, a value SQLite refuses
            answer = error
        if alone and answer is not True:
            if cursor.connection.in_transaction:  # an error may have ended it already
                cursor.execute("ROLLBACK")
            return [answer]
        if answer is not True:
            cursor.execute("ROLLBACK TO grouped_commit")
        if not alone:
            cursor.execute("RELEASE grouped_commit")
        answers.append(answer)
    try:
        cursor.execute("COMMIT")
    except sqlite3.Error as error:
        if cursor.connection.in_transaction:
            cursor.execute("ROLLBACK")
        return [error if answer is True else answer for answer in answers]
    return answers


def one_trip_connector(arguments: tuple[Any, ...], options: dict[str, Any]) -> Callable[[], Any]:
    """An ``async_creator`` for SQLAlchemy: the connection its aiosqlite dialect would open with
    ``arguments`` and ``options`` (from its ``create_connect_args``), as a
    :class:`OneTripConnection`."""

    def open_sqlite() -> sqlite3.Connection:
        connection: sqlite3.Connection = sqlite3.connect(
            *arguments, **{**options, "check_same_thread": False}
        )
        return connection

    async def connect() -> OneTripConnection:
        connection = OneTripConnection(open_sqlite, iter_chunk_size=64)
        connection._thread.daemon = True  # as SQLAlchemy's dialect does: never hold up exit
        await connection
        return connection

    return connect
