"""What a turn writes, counted through the HTTP surface on SQLite and PostgreSQL.

Issue 15 (item 1): a turn from a conversation already known writes nothing unless it changes
something, and an approve click reads its ticket with one statement and commits its decision,
its audit trail and its news in one transaction. Statements are counted, never timed
(``bench/click_bench.py`` times turns).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import asyncpg.transaction
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.sandbox.server import SandboxTenant
from tests.support.sqlite_trips import sqlite_trips
from tests.support.statements import recorded_statements, tables_written
from tests.support.teams_surface import TeamsSurface, answered, chat, teams_surface


@pytest.fixture
async def teams(migrated_engine: AsyncEngine, tenant: SandboxTenant) -> AsyncIterator[TeamsSurface]:
    async with teams_surface(migrated_engine, tenant) as surface:
        yield surface


async def test_messages_from_a_known_chat_write_nothing(
    teams: TeamsSurface, migrated_engine: AsyncEngine
) -> None:
    await teams.answer("avery", "help")  # the chat is new: its reference is stored
    with recorded_statements(migrated_engine) as seen:
        helped = await teams.answer("avery", "help")
        status = await teams.answer("avery", "status")
    assert "calendar sync" in helped.text and status.text
    assert seen.writes == []


FIVE_TABLES = {"tickets", "ticket_decisions", "audit_events", "steps", "outbox"}


def transactions_begun(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every transaction asyncpg starts (a BEGIN round trip) from now on."""
    begun: list[object] = []
    start = asyncpg.transaction.Transaction.start

    async def counted(self: asyncpg.transaction.Transaction) -> None:
        begun.append(self)
        await start(self)

    monkeypatch.setattr(asyncpg.transaction.Transaction, "start", counted)
    return begun


async def test_an_approve_click_writes_in_one_transaction(
    teams: TeamsSurface, migrated_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    form = await teams.answer("avery", "add me to calendar sync")
    await teams.click("avery", "submit_request", form.action_data("submit_request"))
    await teams.settle()
    card = next(p for p in reversed(teams.posts(chat("casey"))) if p.card is not None)

    begun = transactions_begun(monkeypatch)
    trips = sqlite_trips(monkeypatch)
    with recorded_statements(migrated_engine) as seen:
        decided = answered(await teams.click("casey", "approve", card.action_data("approve")))

    assert decided.card is not None and "Approved" in str(decided.card)
    if migrated_engine.dialect.name == "postgresql":
        [decision] = seen.writing_transactions
        reads = [s for s in decision.statements if s.lstrip().upper().startswith("SELECT")]
        assert len(reads) == 1, "the ticket, its decisions and its steps in one statement"
        assert len(decision.writes) == 1, "all five tables in one statement (a WITH)"
        assert tables_written(decision.writes[0]) >= FIVE_TABLES
        # No BEGIN and no COMMIT: the read and the guarded write are the click's round trips.
        assert (len(decision.statements), begun) == (2, [])
    else:
        # What SQLite itself ran: the read alone in one trip to its thread (no transaction, no
        # lock), then BEGIN IMMEDIATE, the ticket's update guarded by its row version, the other
        # tables' writes and the COMMIT in another, and nothing else.
        [read, write] = [trip.sql for trip in trips if trip.sql]
        assert len(read) == 1 and read[0].lstrip().upper().startswith("SELECT")
        assert write[0] == "BEGIN IMMEDIATE" and write[-1] == "COMMIT"
        assert re.fullmatch(r"UPDATE tickets SET .* WHERE id = \d+ AND row_version = \d+", write[1])
        assert set().union(*map(tables_written, write[1:-1])) >= FIVE_TABLES
        assert len(write[1:-1]) >= 5, "one statement per table and row"
        assert [trip.name for trip in trips] == ["_run", "run"]
