"""The store: migrations, drift between models and migrations, and engine behaviour per backend.

Runs on SQLite and, when SYNCWARDEN_TEST_POSTGRES_URL is set, on PostgreSQL too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import cast

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Table, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from syncwarden.core.combined_writes import run_writes
from syncwarden.core.db import create_engine, session_factory, write_transaction
from syncwarden.core.row_writes import RowsInsert
from syncwarden.migrate import alembic_config, head_revision, migration_status, upgrade_to_head
from syncwarden.schema import metadata
from syncwarden.workflows.audit import AuditEvent, record_audit


async def test_fresh_database_is_not_current_until_migrated(engine: AsyncEngine) -> None:
    before = await migration_status(engine)
    assert before.current is None and not before.is_current
    after = await upgrade_to_head(engine)
    assert after.current == head_revision() and after.is_current


async def test_migrating_twice_is_harmless(migrated_engine: AsyncEngine) -> None:
    status = await upgrade_to_head(migrated_engine)
    assert status.is_current


async def test_models_and_migrations_do_not_drift(migrated_engine: AsyncEngine) -> None:
    def diff(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with migrated_engine.connect() as connection:
        differences = await connection.run_sync(diff)
    assert differences == [], f"models differ from migrations; add a revision: {differences}"


async def test_every_model_table_exists_after_migration(migrated_engine: AsyncEngine) -> None:
    async with migrated_engine.connect() as connection:
        tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    assert set(metadata.tables) <= tables


async def test_audit_rows_round_trip_with_timezone(migrated_engine: AsyncEngine) -> None:
    sessions = session_factory(migrated_engine)
    async with sessions.begin() as session:
        record_audit(
            session,
            actor="ada@example.edu",
            action="ticket.created",
            ticket_ref="SW-1001",
            after={"status": "awaiting_approval"},
        )
    async with sessions() as session:
        row = (await session.execute(select(AuditEvent))).scalar_one()
    assert (row.actor, row.action, row.ticket_ref) == (
        "ada@example.edu",
        "ticket.created",
        "SW-1001",
    )
    assert row.after == {"status": "awaiting_approval"}
    assert row.occurred_at.utcoffset() is not None


async def test_concurrent_start_ups_migrate_once(database_url: str) -> None:
    engines = [create_engine(database_url) for _ in range(3)]
    try:
        statuses = await asyncio.gather(*(upgrade_to_head(engine) for engine in engines))
    finally:
        for engine in engines:
            await engine.dispose()
    assert all(status.is_current for status in statuses)


async def test_sqlite_connections_use_wal_foreign_keys_and_full_sync(tmp_path: object) -> None:
    """``synchronous`` must stay FULL (2): a group commit answers its clicks only after its one
    ``COMMIT``, and that answer is worth something only if the commit is on disk by then."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/nested/folder/sw.db")
    try:
        async with engine.connect() as connection:
            journal = (await connection.execute(text("PRAGMA journal_mode"))).scalar_one()
            foreign_keys = (await connection.execute(text("PRAGMA foreign_keys"))).scalar_one()
            synchronous = (await connection.execute(text("PRAGMA synchronous"))).scalar_one()
    finally:
        await engine.dispose()
    assert journal == "wal"
    assert foreign_keys == 1
    assert synchronous == 2


async def test_drift_check_notices_a_column_missing_from_migrations(
    migrated_engine: AsyncEngine,
) -> None:
    """The drift test above is only worth something if a real difference makes it fail."""
    from sqlalchemy import Column, MetaData, String

    drifted = MetaData()
    for table in metadata.tables.values():
        table.to_metadata(drifted)
    drifted.tables["audit_events"].append_column(Column("not_migrated", String(10)))

    def diff(connection: Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(connection), drifted))

    async with migrated_engine.connect() as connection:
        differences = await connection.run_sync(diff)
    assert any("not_migrated" in repr(item) for item in differences)


def _migrate(connection: Connection, direction: str, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    getattr(command, direction)(config, revision)


async def test_channel_roles_move_to_their_own_table_and_back(engine: AsyncEngine) -> None:
    """Migration 0014 keeps the channels admins named: the role column's values become rows
    of ``channel_roles``, and a downgrade puts them back (IT winning where one channel held
    both roles, since the old column held one)."""
    columns = "conversation_id, kind, service_url, bot_id, role, installed, blocked, updated_at"
    async with engine.begin() as connection:
        await connection.run_sync(_migrate, "upgrade", "0013")
        for conversation, role in (("19:it@thread", "it"), ("19:ok@thread", "approvals")):
            await connection.execute(
                text(
                    f"INSERT INTO conversation_refs ({columns}) VALUES "  # noqa: S608 - constants
                    "(:c, 'channel', 'https://smba.example/', '28:bot', :r, true, false, "
                    "CURRENT_TIMESTAMP)"
                ),
                {"c": conversation, "r": role},
            )
        await connection.run_sync(_migrate, "upgrade", "0014")
        moved = await connection.execute(text("SELECT role, conversation_id FROM channel_roles"))
        assert sorted(tuple(row) for row in moved) == [
            ("approvals", "19:ok@thread"),
            ("it", "19:it@thread"),
        ]
        await connection.execute(
            text("UPDATE channel_roles SET conversation_id = '19:it@thread'")
        )  # one channel, both roles
        await connection.run_sync(_migrate, "downgrade", "0013")
        back = await connection.execute(
            text("SELECT conversation_id, role FROM conversation_refs ORDER BY conversation_id")
        )
        assert [tuple(row) for row in back] == [("19:it@thread", "it"), ("19:ok@thread", None)]


async def test_object_ids_already_stored_are_lower_cased(engine: AsyncEngine) -> None:
    """Migration 0015: rows written before ids were kept in one case are found by the plain
    comparison the queries now make."""
    async with engine.begin() as connection:
        await connection.run_sync(_migrate, "upgrade", "0014")
        await connection.execute(
            text(
                "INSERT INTO enrollments (subject_id, subject_upn, subject_name, profile_id, "
                "mailbox, provider, active, paused, created_at, updated_at) VALUES "
                "('AB-CD', 'a@example.edu', 'A', 'P', 'a@example.edu', 'microsoft', true, false, "
                "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
        await connection.run_sync(_migrate, "upgrade", "0015")
        stored = await connection.scalar(text("SELECT subject_id FROM enrollments"))
    assert stored == "ab-cd"


async def test_tickets_that_failed_before_their_kind_was_kept_have_none(
    engine: AsyncEngine,
) -> None:
    """Migration 0025 adds ``tickets.failure_kind`` and guesses no kind for the tickets that
    failed before it (their reason is words for people); a downgrade keeps the tickets."""

    def ticket_columns(connection: Connection) -> tuple[set[str], set[str]]:
        inspector = inspect(connection)
        columns = {column["name"] for column in inspector.get_columns("tickets")}
        indexes = {str(index["name"]) for index in inspector.get_indexes("tickets")}
        return columns, indexes

    async with engine.begin() as connection:
        await connection.run_sync(_migrate, "upgrade", "0023")
        await connection.execute(
            text(
                "INSERT INTO tickets (kind, status, version, subject_id, subject_upn, "
                "subject_name, subject_mail, requester_id, requester_upn, requester_name, "
                "justification, mailbox, required_approvals, created_at, updated_at, "
                "failure_reason) VALUES ('enroll', 'failed', 3, 'a', 'a@example.edu', 'A', "
                "'a@example.edu', 'a', 'a@example.edu', 'A', '', 'a@example.edu', 1, "
                "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'adding them to the sync group: …')"
            )
        )
        await connection.run_sync(_migrate, "upgrade", "0025")
        columns, indexes = await connection.run_sync(ticket_columns)
        assert "failure_kind" in columns and "ix_tickets_failure_kind" in indexes
        kept = await connection.execute(text("SELECT status, failure_kind FROM tickets"))
        assert [tuple(row) for row in kept] == [("failed", None)]
        await connection.run_sync(_migrate, "downgrade", "0023")
        columns, indexes = await connection.run_sync(ticket_columns)
        assert "failure_kind" not in columns and "ix_tickets_failure_kind" not in indexes
        assert await connection.scalar(text("SELECT count(*) FROM tickets")) == 1


async def test_writers_of_one_process_commit_in_the_order_they_came(
    migrated_engine: AsyncEngine,
) -> None:
    """SQLite has one write lock: a burst of write transactions (clicks deciding tickets) queues
    in the process and is served in arrival order, each as soon as the one before commits,
    instead of polling SQLite's lock, which served them in no order and seconds late.
    (PostgreSQL writers of different rows do not wait for each other at all.)"""
    if migrated_engine.dialect.name != "sqlite":
        pytest.skip("only SQLite has one write lock for the whole database")
    sessions = session_factory(migrated_engine)
    first_holds = asyncio.Event()
    release_first = asyncio.Event()
    committed: list[int] = []

    async def write(number: int) -> None:
        async with write_transaction(sessions) as session:
            record_audit(session, actor=f"writer-{number}", action="test.write", ticket_ref=None)
            if number == 0:
                first_holds.set()
                await release_first.wait()
            await session.flush()
            committed.append(number)

    first = asyncio.create_task(write(0))
    await first_holds.wait()
    waiting = []
    for number in range(1, 9):
        waiting.append(asyncio.create_task(write(number)))
        for _ in range(5):  # let it reach its place in the queue before the next one comes
            await asyncio.sleep(0)
    release_first.set()
    await asyncio.gather(first, *waiting)
    assert committed == list(range(9))


async def test_the_next_writer_starts_once_a_commit_with_writes_is_in(
    migrated_engine: AsyncEngine,
) -> None:
    """A unit of work's last writes go to SQLite with its COMMIT; from there SQLite's write lock
    is free, so the next writer of the process starts then, not after the first one's session
    bookkeeping. A transaction that commits halfway and goes on keeps its turn."""
    if migrated_engine.dialect.name != "sqlite":
        pytest.skip("only SQLite's writers queue in the process")
    sessions = session_factory(migrated_engine)
    async with sessions() as one, sessions() as two:  # two connections open in the pool
        await one.connection()
        await two.connection()
    audit = cast(Table, AuditEvent.__table__)
    row = {"occurred_at": datetime.now(UTC), "actor": "first", "action": "test.write"}

    async def first_then_second(commit: Callable[[AsyncSession], Awaitable[object]]) -> bool:
        """Whether a second writer got in while the first was still inside its transaction."""
        committed, finish_first, second_in = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def first() -> None:
            async with write_transaction(sessions) as session:
                await commit(session)
                committed.set()
                await finish_first.wait()

        async def second() -> None:
            async with write_transaction(sessions) as session:
                second_in.set()
                record_audit(session, actor="second", action="test.write", ticket_ref=None)

        first_task = asyncio.create_task(first())
        await committed.wait()
        second_task = asyncio.create_task(second())
        for _ in range(20):  # the second writer's way in (a pooled connection) makes no trip
            await asyncio.sleep(0)
        got_in = second_in.is_set()
        finish_first.set()
        await asyncio.gather(first_task, second_task)
        return got_in

    async def write_and_commit(session: AsyncSession) -> bool:
        return await run_writes(session, [RowsInsert(audit, [row])], commit_next=True)

    async def plain_commit(session: AsyncSession) -> None:
        session.add(AuditEvent(actor="first", action="test.write"))
        await session.commit()

    assert await first_then_second(write_and_commit) is True
    assert await first_then_second(plain_commit) is False
    async with sessions() as session:
        actors = (await session.scalars(select(AuditEvent.actor))).all()
    assert sorted(actors) == ["first", "first", "second", "second"]


async def _drop_server_connections(engine: AsyncEngine) -> None:
    """On PostgreSQL, end every other session on the engine's database, as a server restart
    would; an SQLite file has no server connection to lose."""
    if engine.dialect.name != "postgresql":
        return
    async with engine.connect() as connection:
        await connection.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )


async def test_a_connection_lost_while_idle_is_replaced_before_use(database_url: str) -> None:
    """Connections are pinged only after sitting idle (every checkout, with a threshold of 0):
    one the server dropped meanwhile is replaced, and the statement runs as if nothing
    happened."""
    engine = create_engine(database_url, idle_ping_seconds=0.0)
    try:
        async with engine.connect() as first, engine.connect() as second:
            await first.execute(text("SELECT 1"))
            await second.execute(text("SELECT 1"))
        await _drop_server_connections(engine)  # uses one pooled connection, drops the other
        async with engine.connect() as first, engine.connect() as second:
            answers = [
                (await first.execute(text("SELECT 1"))).scalar_one(),
                (await second.execute(text("SELECT 2"))).scalar_one(),
            ]
        assert answers == [1, 2]
    finally:
        await engine.dispose()
