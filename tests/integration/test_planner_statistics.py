"""SQLite's planner gets table statistics, so a person's rows are found by who they are.

Without statistics SQLite saw no difference between the index on an enrollment's person and
the ones that start with its ``active`` flag, and `status` read every active enrollment to find
one person's (issue 15: `status` cost twice PostgreSQL's on SQLite). The test asks SQLite how it
would run the statement `status` really sends, after the service's own refresh and nothing else
(``tests/integration/test_query_plans.py`` checks every turn's plan with the same statistics).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.core.db import create_engine, session_factory
from syncwarden.core.planner_statistics import refresh_planner_statistics
from syncwarden.migrate import upgrade_to_head
from syncwarden.workflows.queries import TicketQueries
from tests.support.lists import seed_enrollments


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'planner.db'}")
    await upgrade_to_head(engine)
    yield engine
    await engine.dispose()


async def enrollments_plan_of_status(engine: AsyncEngine, subject_id: str) -> list[str]:
    """SQLite's plan lines for the enrollments table in the statement `status` sends."""
    sent: list[tuple[str, Any]] = []

    def keep(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        sent.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", keep)
    try:
        status = await TicketQueries(session_factory(engine)).status_of(subject_id)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", keep)
    assert status.enrolled_mailbox is not None
    [(statement, parameters)] = [s for s in sent if s[0].lstrip().upper().startswith("SELECT")]
    async with engine.connect() as connection:
        plan = await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        return [row[-1] for row in plan.all() if " enrollments " in f" {row[-1]} "]


async def test_status_finds_a_persons_enrollment_by_their_id(sqlite_engine: AsyncEngine) -> None:
    people = await seed_enrollments(session_factory(sqlite_engine), range(400))
    assert await refresh_planner_statistics(sqlite_engine) is True
    [line] = await enrollments_plan_of_status(sqlite_engine, people[7].subject_id)
    assert "(subject_id=?" in line, line


async def test_other_databases_keep_their_own_statistics(migrated_engine: AsyncEngine) -> None:
    expected = migrated_engine.dialect.name == "sqlite"  # PostgreSQL: autovacuum's ANALYZE
    assert await refresh_planner_statistics(migrated_engine) is expected
