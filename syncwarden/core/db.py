"""The database: one declarative base for every room's tables, and engine/session factories.

Nothing here connects at import time; the composition root builds one engine per process with
:func:`create_engine` and hands out sessions from :func:`session_factory`. SQLite (the embedded
default) gets WAL journaling and foreign keys on every connection, because SQLite leaves both off
unless asked and our tables rely on foreign keys for integrity.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry.trace import SpanKind, Status, StatusCode
from sqlalchemy import DateTime, MetaData, TypeDecorator, event, exc, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Dialect, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.sql import Executable

from syncwarden.core.fair_pool import FairAsyncQueuePool
from syncwarden.core.sqlite_driver import SERIALIZED, OneTripConnection, one_trip_connector
from syncwarden.core.tracing import tracer, tracing_installed

# Stable constraint names make Alembic migrations reproducible across SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# Execution option: on SQLite, start the transaction with the database write lock already held, so
# two writers that read-then-write (migrations, row claims) queue up instead of failing.
SQLITE_IMMEDIATE_OPTION = "syncwarden_sqlite_immediate"


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC on the way in and out, on every backend.

    SQLite has no time-zone type and hands back naive datetimes; without this, comparing a stored
    time with ``datetime.now(UTC)`` would raise on SQLite and work on PostgreSQL.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; pass an aware datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is UTC:  # asyncpg's timestamps are UTC already
            return value
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base shared by every room's models, so one metadata describes the schema."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


# A pooled server connection that sat unused this long is pinged before it is handed out.
IDLE_PING_SECONDS = 10.0


def create_engine(
    url: str,
    *,
    echo: bool = False,
    pool_size: int = 5,
    max_overflow: int = 10,
    idle_ping_seconds: float = IDLE_PING_SECONDS,
) -> AsyncEngine:
    """Build the process's engine; for SQLite, create the folder and turn on WAL + foreign keys.

    Connections are handed out in the order they were asked for (:mod:`core.fair_pool`).
    ``max_overflow`` is SQLAlchemy's default for the short-lived engines of commands and tests;
    the service passes its setting (none by default, see ``DatabaseSettings.max_overflow``).

    A PostgreSQL connection is checked before use only when it has been idle for
    ``idle_ping_seconds`` (:func:`_ping_idle_connections`), not at every checkout as
    ``pool_pre_ping`` does: asyncpg's ping is three round trips (BEGIN, a query, ROLLBACK), and
    a Teams turn checks out one or two connections. An SQLite file has no server to lose.
    """
    parsed = make_url(url)
    options: dict[str, Any] = {"echo": echo}
    if is_sqlite(parsed):
        _ensure_sqlite_folder(parsed)
        if sqlite3.threadsafety == SERIALIZED:  # see core.sqlite_driver: cursors off its thread
            arguments, connect_options = parsed.get_dialect()().create_connect_args(parsed)
            options["async_creator"] = one_trip_connector(tuple(arguments), dict(connect_options))
    else:
        options["pool_size"] = pool_size
        options["max_overflow"] = max_overflow
    if not _in_memory(parsed):  # an in-memory SQLite database is one connection, never pooled
        options["poolclass"] = FairAsyncQueuePool
    engine = _create_async_engine(parsed, **options)
    _trace_statements(engine, parsed.get_backend_name())
    if is_sqlite(parsed):
        event.listen(engine.sync_engine, "connect", _configure_sqlite_connection)
        event.listen(engine.sync_engine, "begin", _begin_sqlite_transaction)
    else:
        _ping_idle_connections(engine, idle_ping_seconds)
    return engine


_LAST_USED = "syncwarden.last_used"


def _ping_idle_connections(engine: AsyncEngine, idle_seconds: float) -> None:
    """Before handing out a connection idle for ``idle_seconds`` or more, ping it; a dead one is
    replaced by a new connection, as ``pool_pre_ping`` would (the pool retries the checkout
    when a ``checkout`` listener raises :class:`sqlalchemy.exc.DisconnectionError`).

    A connection in steady use is not pinged: should the server restart under load, the first
    statement on a dead connection fails, and SQLAlchemy then invalidates the whole pool, so
    the connections after it are new ones.
    """
    dialect = engine.sync_engine.dialect

    def checkin(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_LAST_USED] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        last_used = record.info.get(_LAST_USED)
        if last_used is None or time.monotonic() - last_used < idle_seconds:
            return  # new, or used moments ago
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise exc.DisconnectionError(f"an idle connection was lost: {error}") from error

    event.listen(engine.sync_engine, "checkin", checkin)
    event.listen(engine.sync_engine, "checkout", checkout)


_SPANS = "syncwarden.spans"


def _trace_statements(engine: AsyncEngine, system: str) -> None:
    """A span per statement (its SQL, never its parameters), when tracing is on.

    Off, a statement skips the span altogether rather than making one that records nothing:
    that span and its attributes were a tenth of what SQLAlchemy spends on a statement.
    """

    def before(conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        if not tracing_installed():
            return
        operation = statement.lstrip().split(" ", 1)[0].upper() or "SQL"
        span = tracer.start_span(
            f"db {operation}",
            kind=SpanKind.CLIENT,
            attributes={"db.system": system, "db.statement": statement[:2000]},
        )
        conn.info.setdefault(_SPANS, []).append(span)

    def after(conn: Connection, *_args: Any) -> None:
        spans = conn.info.get(_SPANS)
        if spans:
            spans.pop().end()

    def failed(context: Any) -> None:
        spans = context.connection.info.get(_SPANS) if context.connection is not None else None
        if spans:
            span = spans.pop()
            span.set_status(Status(StatusCode.ERROR, type(context.original_exception).__name__))
            span.end()

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    event.listen(engine.sync_engine, "after_cursor_execute", after)
    event.listen(engine.sync_engine, "handle_error", failed)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions whose objects stay usable after commit (they are handed to notifiers then)."""
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def write_transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session in a transaction meant to read-then-write; commits on success.

    On SQLite the transaction starts with the write lock held (``BEGIN IMMEDIATE``), so two such
    transactions queue instead of both reading and then failing to write; the writers of one
    process queue first on an asyncio lock (:func:`sqlite_writers_queue`). On PostgreSQL, lock
    the rows you read with ``with_for_update()``.
    """
    # The session closes (its connection back to the pool) after the turn has passed on.
    async with sessions() as session, sqlite_writers_queue(sessions) as turn:
        connection = await session.connection(execution_options={SQLITE_IMMEDIATE_OPTION: True})
        driver = None
        if turn is not None:
            # A unit of work's last writes go with its COMMIT (core.sqlite_writes); the next
            # writer's turn starts there, not after this session's bookkeeping.
            driver = (await connection.get_raw_connection()).driver_connection
            if isinstance(driver, OneTripConnection):
                driver.after_write_and_commit(turn.pass_on)
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
        finally:
            if isinstance(driver, OneTripConnection):
                driver.after_write_and_commit(None)


def database_of(sessions: async_sessionmaker[AsyncSession]) -> str:
    """The database (``sqlite``, ``postgresql``) the sessions are bound to, asked without
    making a session."""
    bind = sessions.kw.get("bind")
    if not isinstance(bind, AsyncEngine):
        raise ValueError("these sessions are bound to no engine")
    return bind.dialect.name


async def outside_transaction(session: AsyncSession) -> None:
    """Run the fresh ``session``'s statements each on its own (autocommit) on PostgreSQL.

    For a lone read whose answer needs no transaction around it: PostgreSQL then runs one
    round trip instead of three (BEGIN, the read, ROLLBACK). Call it before the session's first
    statement. SQLite transactions are opened by :func:`_begin_sqlite_transaction` and stay.
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


# How long a writer waits for the others of its process before it goes to SQLite's own queue: the
# connection's busy timeout (see _configure_sqlite_connection), after which SQLite gives up too.
_SQLITE_QUEUE_SECONDS = 30.0
_sqlite_writers: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, weakref.WeakKeyDictionary[Engine, asyncio.Lock]
] = weakref.WeakKeyDictionary()
_holding_sqlite_writer: ContextVar[bool] = ContextVar("syncwarden_sqlite_writer", default=False)


class WriterTurn:
    """A write transaction's turn at :func:`sqlite_writers_queue`'s lock, passed on once."""

    def __init__(self, lock: asyncio.Lock) -> None:
        self._lock: asyncio.Lock | None = lock

    def pass_on(self) -> None:
        """Let the next writer go; again, it does nothing (the lock may be another's by then)."""
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()


@asynccontextmanager
async def sqlite_writers_queue(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[WriterTurn | None]:
    """On SQLite, one write transaction of this process at a time, the others waiting in order.

    SQLite has one write lock, and a writer that finds it taken polls for it, sleeping longer
    between tries the longer it waits (up to 100 ms a try): under a burst of clicks, a decision
    could wait seconds for a lock free most of that time, and not in its turn. Queued here,
    each writer starts the moment the one before it commits, in the order they came; other
    processes on the same file still meet SQLite's lock as before.

    Never in the way of what worked before: a write transaction opened inside another one of the
    same task passes (SQLite decides, as it did), and a writer that waited the whole busy timeout
    here goes on to SQLite's queue. Both get None; a writer that queued gets its turn, which it
    may pass on before it leaves (at its commit: the lock guards SQLite's, free from there).
    """
    bind = sessions.kw.get("bind")
    engine = bind.sync_engine if isinstance(bind, AsyncEngine) else None
    if engine is None or engine.dialect.name != "sqlite" or _holding_sqlite_writer.get():
        yield None
        return
    per_engine = _sqlite_writers.setdefault(asyncio.get_running_loop(), weakref.WeakKeyDictionary())
    lock = per_engine.setdefault(engine, asyncio.Lock())
    try:
        async with asyncio.timeout(_SQLITE_QUEUE_SECONDS):
            await lock.acquire()
    except TimeoutError:
        queued = False
    else:
        queued = True
    if not queued:
        yield None
        return
    holding = _holding_sqlite_writer.set(True)
    turn = WriterTurn(lock)
    try:
        yield turn
    finally:
        _holding_sqlite_writer.reset(holding)
        turn.pass_on()


async def insert_ignoring_duplicates(
    session: AsyncSession, table: type[Base], rows: list[dict[str, Any]], *, unique: str
) -> None:
    """Insert rows, silently skipping any whose ``unique`` column value is already stored.

    Inside a larger transaction a plain insert that hits the unique constraint would abort the
    whole transaction (on PostgreSQL) with the change it was written beside; ``ON CONFLICT DO
    NOTHING`` keeps the change and drops only the repeat.
    """
    if not rows:
        return
    statement = insert_ignoring(session.get_bind().dialect.name, table.__tablename__, unique)
    await session.execute(statement, rows)


@functools.cache
def insert_ignoring(dialect: str, table: str, unique: str) -> Executable:
    """One fixed statement per table, the rows given as its parameters: built once per process
    and compiled once (SQLAlchemy cannot cache a multi-row ``.values(rows)`` clause of JSON
    values, so that was compiled again on every call), on the table rather than its ORM class,
    which would send plain rows through the ORM's bulk-insert machinery."""
    target = Base.metadata.tables[table]
    if dialect == "postgresql":
        return postgresql.insert(target).on_conflict_do_nothing(index_elements=[unique])
    if dialect == "sqlite":
        return sqlite.insert(target).on_conflict_do_nothing(index_elements=[unique])
    raise NotImplementedError(f"no insert-or-ignore for the {dialect} database")


async def upsert_rows(
    session: AsyncSession,
    table: type[Base],
    rows: list[dict[str, Any]],
    *,
    key: tuple[str, ...],
    columns: tuple[str, ...],
) -> None:
    """Insert rows, or overwrite ``columns`` of the row already stored under the same ``key``.

    One statement, sent as an executemany of one cached ``INSERT ... ON CONFLICT DO UPDATE``,
    where ``session.merge`` costs a SELECT and an INSERT or UPDATE per row plus an ORM object
    each. Every row must hold the same keys. Column defaults apply to inserts only: pass a
    value for any column (such as a timestamp) that an update must change too.
    """
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        statement: Any = postgresql.insert(table)
    elif dialect == "sqlite":
        statement = sqlite.insert(table)
    else:
        raise NotImplementedError(f"no upsert for the {dialect} database")
    statement = statement.on_conflict_do_update(
        index_elements=list(key), set_={name: statement.excluded[name] for name in columns}
    )
    await session.execute(statement, rows)


async def ping(engine: AsyncEngine) -> None:
    """Round-trip to the database; raises when it cannot be reached."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


def _in_memory(url: URL) -> bool:
    return is_sqlite(url) and url.database in (None, "", ":memory:")


def _ensure_sqlite_folder(url: URL) -> None:
    database = url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    # Stop the sqlite3 driver from opening transactions on its own; _begin_sqlite_transaction
    # opens them instead, so that DDL is transactional and SAVEPOINTs work as on PostgreSQL.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # Every commit reaches the disk before it is answered (SQLite's default, stated so that no
    # build's other default changes it): with NORMAL, a power cut could take back a decision
    # whose step had already changed Microsoft 365. Commits share the cost instead
    # (core.sqlite_group_commit).
    cursor.execute("PRAGMA synchronous=FULL")
    # Writers queue on SQLite's single write lock; under a burst (the sync worker commits many
    # people at once) five seconds proved too short on a loaded machine.
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _begin_sqlite_transaction(connection: Connection) -> None:
    """Open every transaction explicitly; ``BEGIN IMMEDIATE`` when the write lock was asked for.

    On :mod:`core.sqlite_driver`'s connections the ``BEGIN`` goes with the transaction's first
    statement, in its trip to SQLite's thread, rather than in a trip (and a SQLAlchemy
    execution) of its own.
    """
    immediate = connection.get_execution_options().get(SQLITE_IMMEDIATE_OPTION, False)
    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"
    driver = connection.connection.driver_connection
    if isinstance(driver, OneTripConnection):
        driver.begin_with_next_statement(begin)
    else:
        connection.exec_driver_sql(begin)
