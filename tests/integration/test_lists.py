"""IT's lists page in the database: every row exactly once, in a stable order, whatever is
added between two pages, and filtered by the database (issue 15, item 4).

Runs on SQLite and, with SYNCWARDEN_TEST_POSTGRES_URL, on PostgreSQL; the query plans on
PostgreSQL are checked in test_query_plans.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import pytest
from alembic import command
from sqlalchemy import event, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from syncwarden.core.db import session_factory, write_transaction
from syncwarden.core.search_keys import search_key
from syncwarden.migrate import alembic_config, upgrade_to_head
from syncwarden.workflows.model import TicketStatus
from syncwarden.workflows.paging import (
    PAGE_SIZE,
    Page,
    TicketScope,
    TicketsCursor,
    TicketsFilter,
    UsersCursor,
    UsersFilter,
    UserState,
)
from syncwarden.workflows.queries import TicketQueries
from syncwarden.workflows.records import Enrollment, Ticket
from syncwarden.workflows.results import EnrollmentView
from tests.support.lists import (
    SeededPerson,
    SeededTicket,
    person,
    seed_enrollments,
    seed_tickets,
    ticket,
)

Row = TypeVar("Row")
Cursor = TypeVar("Cursor", UsersCursor, TicketsCursor)


@pytest.fixture
def sessions(migrated_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(migrated_engine)


@pytest.fixture
def queries(sessions: async_sessionmaker[AsyncSession]) -> TicketQueries:
    return TicketQueries(sessions)


async def walk(
    fetch: Callable[[Any], Awaitable[Page[Row]]],
    between: Callable[[int], Awaitable[None]] | None = None,
) -> list[tuple[Row, ...]]:
    """Every page, following each page's cursor; ``between(n)`` runs after page ``n``."""
    pages: list[tuple[Row, ...]] = []
    after = None
    while True:
        page = await fetch(after)
        pages.append(page.rows)
        assert len(page.rows) <= PAGE_SIZE
        if page.after is None:
            return pages
        assert len(page.rows) == PAGE_SIZE, "only the last page is short"
        after = page.after
        if between is not None:
            await between(len(pages))
        assert len(pages) < 1000, "the cursor does not move"


def in_name_order(people: Sequence[SeededPerson]) -> list[str]:
    ordered = sorted(people, key=lambda p: (search_key(p.name, 256), p.id))
    return [p.subject_id for p in ordered]


def ids(pages: Sequence[Sequence[EnrollmentView]]) -> list[str]:
    return [row.subject_id for page in pages for row in page]


async def test_the_users_pages_hold_everyone_once_in_name_order(
    sessions: async_sessionmaker[AsyncSession], queries: TicketQueries
) -> None:
    people = await seed_enrollments(sessions, range(130))
    pages = await walk(lambda after: queries.users_page(UsersFilter(), after))
    assert len(pages) == 6 and [len(page) for page in pages][-1] == 5
    assert ids(pages) == in_name_order(people)
    # Case and accents do not decide the order: "Émile" sorts with the e's, "ADAM" with "Ada".
    names = [row.name for page in pages for row in page]
    assert names.index("Ada Lee 8") < names.index("ADAM Lee 9") < names.index("Ánh Lee 2")
    assert names.index("Bea Lee 3") < names.index("Émile Lee 5") < names.index("Öz Lee 7")


FILTERS: dict[str, tuple[UsersFilter, Callable[[SeededPerson], bool]]] = {
    "paused": (UsersFilter(UserState.PAUSED), lambda p: p.paused),
    "failing": (UsersFilter(UserState.FAILING), lambda p: p.error is not None),
    "ok": (UsersFilter(UserState.OK), lambda p: not p.paused and p.error is None),
    "error kind": (UsersFilter(error_kind="permission"), lambda p: p.error_kind == "permission"),
    "failing, paused and kind": (
        UsersFilter(UserState.PAUSED, "throttled"),
        lambda p: p.paused and p.error_kind == "throttled",
    ),
    "name, any case": (UsersFilter(name="ANN"), lambda p: search_key(p.name, 256)[:3] == "ann"),
    "name with accents": (UsersFilter(name="emile"), lambda p: p.name.startswith("Émile")),
    "name of two words": (
        UsersFilter(name="Ann  de la"),
        lambda p: p.name.startswith("Ann de la Cruz"),
    ),
    "upn": (UsersFilter(name="bea.okafor."), lambda p: p.upn.startswith("bea.okafor.")),
    "sync address": (
        UsersFilter(name="zoë.ng.46@MAIL"),
        lambda p: p.mailbox.startswith("zoë.ng.46@mail"),
    ),
    "name and state": (
        UsersFilter(UserState.FAILING, name="a"),
        lambda p: p.error is not None and search_key(p.name, 256).startswith("a"),
    ),
    "nobody": (UsersFilter(name="xavier"), lambda p: False),
}


@pytest.mark.parametrize("case", sorted(FILTERS))
async def test_the_users_filters_are_applied_by_the_database(
    sessions: async_sessionmaker[AsyncSession], queries: TicketQueries, case: str
) -> None:
    people = await seed_enrollments(sessions, range(400))
    wanted, keeps = FILTERS[case]
    pages = await walk(lambda after: queries.users_page(wanted, after))
    expected = in_name_order([p for p in people if keeps(p)])
    assert case == "nobody" or expected, "the seed has someone for every other filter"
    assert ids(pages) == expected


async def test_rows_added_between_pages_neither_repeat_nor_hide_a_row(
    sessions: async_sessionmaker[AsyncSession], queries: TicketQueries
) -> None:
    """Keyset paging: whoever is added while IT clicks through is shown or not depending on
    where they sort, but everyone who was there all along is shown exactly once."""
    people = await seed_enrollments(sessions, range(100))
    added = iter(range(1000, 2000, 10))

    async def enrol_more(_page: int) -> None:
        await seed_enrollments(sessions, [next(added) + offset for offset in range(10)])

    pages = await walk(lambda after: queries.users_page(UsersFilter(), after), enrol_more)
    shown = ids(pages)
    assert len(shown) == len(set(shown)), "a row was shown twice"
    assert set(in_name_order(people)) <= set(shown), "a row that was there all along was skipped"
    keys = [(search_key(row.name, 256), row.subject_id) for page in pages for row in page]
    assert [key for key, _ in keys] == sorted(key for key, _ in keys)


def newest_first(tickets: Sequence[SeededTicket]) -> list[int]:
    return sorted((t.id for t in tickets), reverse=True)


def refs(pages: Sequence[Sequence[Any]]) -> list[int]:
    return [int(view.ref.removeprefix("SW-")) - 1000 for page in pages for view in page]


TICKET_FILTERS: dict[str, tuple[TicketsFilter, Callable[[SeededTicket], bool]]] = {
    "open (the default)": (
        TicketsFilter(),
        lambda t: TicketStatus(t.status).is_open,
    ),
    "all": (TicketsFilter(TicketScope.ALL), lambda t: True),
    "failed": (TicketsFilter(TicketStatus.FAILED), lambda t: t.status == "failed"),
    "completed": (TicketsFilter(TicketStatus.COMPLETED), lambda t: t.status == "completed"),
    "waiting for a manual step": (
        TicketsFilter(TicketStatus.WAITING_MANUAL),
        lambda t: t.status == "waiting_manual",
    ),
    "name": (
        TicketsFilter(TicketScope.ALL, "Émile"),
        lambda t: t.name.startswith("Émile"),
    ),
    "upn and status": (
        TicketsFilter(TicketStatus.COMPLETED, "ann-marie.lee"),
        lambda t: t.status == "completed" and t.upn.startswith("ann-marie.lee"),
    ),
    "error kind (open: failed, and retried under way)": (
        TicketsFilter(error_kind="permission"),
        lambda t: t.failure_kind == "permission" and TicketStatus(t.status).is_open,
    ),
    "error kind and status": (
        TicketsFilter(TicketStatus.FAILED, error_kind="no_mailbox"),
        lambda t: t.failure_kind == "no_mailbox" and t.status == "failed",
    ),
    "error kind and name": (
        TicketsFilter(TicketScope.ALL, "emile", error_kind="not_in_scope"),
        lambda t: t.failure_kind == "not_in_scope" and t.name.startswith("Émile"),
    ),
}


@pytest.mark.parametrize("case", sorted(TICKET_FILTERS))
async def test_the_ticket_pages_hold_each_ticket_once_newest_first(
    sessions: async_sessionmaker[AsyncSession], queries: TicketQueries, case: str
) -> None:
    tickets = await seed_tickets(sessions, range(300), with_children=True)
    wanted, keeps = TICKET_FILTERS[case]
    pages = await walk(lambda after: queries.tickets_page(wanted, after))
    expected = newest_first([t for t in tickets if keeps(t)])
    assert expected
    assert refs(pages) == expected
    # The rows are whole tickets: their decisions came with them.
    views = [view for page in pages for view in page]
    assert all(bool(view.decisions) is (view.status != "awaiting_approval") for view in views)


async def test_tickets_opened_while_paging_wait_for_the_first_page(
    sessions: async_sessionmaker[AsyncSession], queries: TicketQueries
) -> None:
    tickets = await seed_tickets(sessions, range(120))
    added = iter(range(1000, 2000))

    async def more(_page: int) -> None:
        await seed_tickets(sessions, [next(added) for _ in range(7)])

    pages = await walk(
        lambda after: queries.tickets_page(TicketsFilter(TicketScope.ALL), after), more
    )
    assert refs(pages) == newest_first(tickets)


async def test_status_is_one_query_with_the_enrollment_and_the_open_ticket(
    migrated_engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    queries: TicketQueries,
) -> None:
    people = await seed_enrollments(sessions, range(3))
    # Person 0 is enrolled and has an open ticket; person 1 is only enrolled; person 16 has
    # only a ticket (awaiting approval: TICKET_STATUSES[16]); person 4 has neither.
    await seed_tickets(sessions, [16])
    async with write_transaction(sessions) as session:
        session.add(Ticket(**(ticket(0) | {"status": "provisioning"})))
    statements: list[str] = []

    def count(_conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(migrated_engine.sync_engine, "before_cursor_execute", count)
    try:
        both = await queries.status_of(people[0].subject_id.upper())
        enrolled = await queries.status_of(people[1].subject_id)
        asked = await queries.status_of(person(16)["subject_id"])
        nobody = await queries.status_of(person(4)["subject_id"])
    finally:
        event.remove(migrated_engine.sync_engine, "before_cursor_execute", count)
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 4
    assert both.open_ticket is not None and both.open_ticket.status == "provisioning"
    assert both.enrolled_mailbox == people[0].mailbox
    assert enrolled.open_ticket is None and enrolled.enrolled_mailbox == people[1].mailbox
    assert enrolled.last_error == people[1].error and enrolled.last_sync_at is not None
    assert asked.open_ticket is not None and asked.open_ticket.status == "awaiting_approval"
    assert asked.open_ticket.ref.startswith("SW-") and asked.enrolled_mailbox is None
    assert nobody.open_ticket is None and nobody.enrolled_mailbox is None


async def test_one_person_is_found_by_upn_or_sync_address_in_any_case(
    sessions: async_sessionmaker[AsyncSession], queries: TicketQueries
) -> None:
    people = await seed_enrollments(sessions, range(20))
    who = people[5]  # Émile Lee 5
    for name in (who.upn.upper(), f"  {who.mailbox.title()} ", who.subject_id.upper()):
        assert [row.subject_id for row in await queries.enrollments_of(name)] == [who.subject_id]
    assert await queries.enrollments_of("emile") == []  # a whole address, not a prefix


async def test_the_search_keys_follow_the_orm_s_changes(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with write_transaction(sessions) as session:
        row = Enrollment(
            subject_id="S-1",
            subject_upn="Zoe.Ng@Example.edu",
            subject_name="  Zoë   NG ",
            profile_id="P",
            mailbox="Zoe@Example.edu",
        )
        session.add(row)
    async with write_transaction(sessions) as session:
        stored = await session.scalar(select(Enrollment))
        assert stored is not None
        assert (stored.name_key, stored.upn_key, stored.mailbox_key) == (
            "zoe ng",
            "zoe.ng@example.edu",
            "zoe@example.edu",
        )
        stored.mailbox = "Zoë.Ng@Elsewhere.example"
    async with sessions() as session:
        assert await session.scalar(select(Enrollment.mailbox_key)) == "zoe.ng@elsewhere.example"


def _migrate(connection: Connection, direction: str, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    getattr(command, direction)(config, revision)


async def test_the_migration_fills_the_keys_of_the_rows_already_stored(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(_migrate, "upgrade", "0015")
        await connection.execute(
            text(
                "INSERT INTO enrollments (subject_id, subject_upn, subject_name, profile_id, "
                "mailbox, provider, active, paused, created_at, updated_at) VALUES ('s-1', "
                "'Ann.Lee@Example.edu', 'Ánn LEE', 'P', 'ANN@example.edu', 'microsoft', true, "
                "false, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
    await upgrade_to_head(engine)
    sessions = session_factory(engine)
    queries = TicketQueries(sessions)
    page = await queries.users_page(UsersFilter(name="ann l"))
    assert [row.name for row in page.rows] == ["Ánn LEE"]
    assert [row.name for row in await queries.enrollments_of("ann@EXAMPLE.edu")] == ["Ánn LEE"]
    async with engine.begin() as connection:
        await connection.run_sync(_migrate, "downgrade", "0015")
        columns = await connection.run_sync(
            lambda sync: {column["name"] for column in inspect(sync).get_columns("enrollments")}
        )
    assert "name_key" not in columns
