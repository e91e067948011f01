"""What a turn writes, counted through the HTTP surface on SQLite and PostgreSQL.

Issue 15 (item 1): a turn from a conversation already known writes nothing unless it changes
something, and an approve click reads its ticket with one statement and commits its decision,
its audit trail and its news in one transaction. Statements are counted, never timed
(``bench/click_bench.py`` times turns).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.sandbox.server import SandboxTenant
from tests.support.statements import recorded_statements
from tests.support.teams_surface import TeamsSurface, answered, chat, teams_surface


def _table(statement: str) -> str:
    """The table an INSERT, UPDATE or DELETE writes."""
    words = statement.split()
    return (words[1] if words[0].upper() == "UPDATE" else words[2]).strip('"')


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


async def test_an_approve_click_writes_in_one_transaction(
    teams: TeamsSurface, migrated_engine: AsyncEngine
) -> None:
    form = await teams.answer("avery", "add me to calendar sync")
    await teams.click("avery", "submit_request", form.action_data("submit_request"))
    await teams.settle()
    card = next(p for p in reversed(teams.posts(chat("casey"))) if p.card is not None)

    with recorded_statements(migrated_engine) as seen:
        decided = answered(await teams.click("casey", "approve", card.action_data("approve")))

    assert decided.card is not None and "Approved" in str(decided.card)
    [decision] = seen.writing_transactions
    reads = [s for s in decision.statements if s.lstrip().upper().startswith("SELECT")]
    assert len(reads) == 1, "the ticket, its decisions and its steps in one statement"
    tables = {_table(statement) for statement in decision.writes}
    assert {"tickets", "ticket_decisions", "audit_events", "steps", "outbox"} <= tables
    assert sum(w.startswith("INSERT INTO outbox") for w in decision.writes) == 1, "one statement"
