"""Every query a turn runs reads through an index, with 10,000 people enrolled (issue 15).

The queries are not written out here: the turns run for real (messages and card clicks through
:class:`DialogueLogic`, the workflow service, the stores), every statement SQLAlchemy sends is
captured with its parameters, and the database is asked how it would run each one (``EXPLAIN``
with the same parameters, on tables holding 10,000 enrollments, 10,000 tickets with their
decisions and steps, audit rows, outbox rows, conversations and card posts, all ANALYZEd). A
sequential scan of any table outside :data:`SMALL_TABLES` fails the test, so a query added
later without an index fails it too; the last test drops indexes to show that it does.

PostgreSQL's plans are the ones that matter in production; SQLite's (the embedded default,
``EXPLAIN QUERY PLAN``) are checked the same way.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import event, insert, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from syncwarden.bot import cards
from syncwarden.bot.card_posts import CardPost, CardPostStore, CardView
from syncwarden.bot.conversations import (
    ChannelRole,
    ConversationKind,
    ConversationRecord,
    ConversationRef,
    ConversationStore,
)
from syncwarden.bot.dialogue import DialogueLogic, Incoming, Reply
from syncwarden.connectors.scheduling.builtin import BuiltinScheduling
from syncwarden.core.db import session_factory, write_transaction
from syncwarden.core.planner_statistics import refresh_planner_statistics
from syncwarden.core.settings import ApprovalSettings, ProvisioningSettings
from syncwarden.schema import metadata
from syncwarden.workflows.audit import AuditEvent
from syncwarden.workflows.outbox import OutboxMessage
from syncwarden.workflows.ports import Person
from syncwarden.workflows.queries import TicketQueries
from syncwarden.workflows.roster import Roster
from syncwarden.workflows.service import WorkflowService
from syncwarden.workflows.unit_of_work import UnitsOfWork
from tests.support.lists import (
    START,
    SeededPerson,
    SeededTicket,
    seed_enrollments,
    seed_tickets,
)
from tests.support.tickets import sample_ticket

PEOPLE = 10_000
# Tables that stay small whatever the number of people, where reading every row is the
# cheapest plan and always will be.
SMALL_TABLES = {
    "channel_roles": "one row per channel role (there are two roles)",
}
IT_ADMIN = Person("00000000-0000-0000-0000-00000000a001", "Dana Whitfield", "dana@example.edu")
APPROVER = Person("00000000-0000-0000-0000-00000000a002", "Casey Lindqvist", "casey@example.edu")
# A whole plan's text, kept short in a failure message.
_SHOWN_SQL = 300


class RefusingDirectory:
    """The turns checked here never ask the directory (the roster names people by object id);
    one that did would fail here instead of reaching Microsoft 365."""

    async def get_user(self, id_or_upn: str) -> Any:
        raise AssertionError(f"a turn asked the directory for {id_or_upn}")

    async def find_user_by_address(self, address: str) -> Any:
        raise AssertionError(f"a turn asked the directory for {address}")

    async def members(self, group_id: str, *, transitive: bool = False) -> Any:
        raise AssertionError(f"a turn asked the directory for group {group_id}")

    async def has_mailbox(self, user_id: str) -> bool:
        raise AssertionError(f"a turn asked the directory about {user_id}")


@dataclass
class World:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    dialogue: DialogueLogic
    service: WorkflowService
    conversations: ConversationStore
    people: list[SeededPerson]
    tickets: list[SeededTicket]
    statements: list[tuple[str, Any]] = field(default_factory=list)

    def ticket_with(self, status: str) -> SeededTicket:
        return next(t for t in self.tickets if t.status == status)


def incoming(person: Person, text: str = "", value: dict[str, Any] | None = None) -> Incoming:
    """A message or click from ``person`` in their 1:1 chat."""
    chat = ConversationRef(
        f"a:{person.id}",
        ConversationKind.PERSONAL,
        "https://smba.example/amer/",
        "tenant",
        "28:bot",
        user_aad_id=person.id,
        user_mri=f"29:{person.id}",
    )
    return Incoming(chat, person, f"29:{person.id}", text=text, value=value or {})


def staff(seeded: SeededPerson) -> Person:
    return Person(seeded.subject_id, seeded.name, seeded.upn)


@pytest.fixture
async def world(migrated_engine: AsyncEngine) -> World:
    sessions = session_factory(migrated_engine)
    people = await seed_enrollments(sessions, range(PEOPLE))
    tickets = await seed_tickets(sessions, range(PEOPLE), with_children=True)
    await _seed_the_rest(sessions, people, tickets)
    await analyze(migrated_engine)
    approvals = ApprovalSettings(approvers=[APPROVER.id], it_admins=[IT_ADMIN.id])
    directory: Any = RefusingDirectory()
    roster = Roster(directory, approvals)
    service = WorkflowService(
        UnitsOfWork(sessions),
        directory=directory,
        scheduling=BuiltinScheduling(sessions),
        roster=roster,
        approvals=approvals,
        provisioning=ProvisioningSettings(),
    )
    conversations = ConversationStore(sessions)
    dialogue = DialogueLogic(conversations, service, roster)
    return World(migrated_engine, sessions, dialogue, service, conversations, people, tickets)


async def _seed_the_rest(
    sessions: async_sessionmaker[AsyncSession],
    people: Sequence[SeededPerson],
    tickets: Sequence[SeededTicket],
) -> None:
    """Conversations, card posts and views, audit and outbox rows: as many as people."""
    rows: dict[Any, list[dict[str, Any]]] = {
        ConversationRecord: [
            {
                "conversation_id": f"a:{p.subject_id}",
                "kind": "personal",
                "service_url": "https://smba.example/amer/",
                "tenant_id": "tenant",
                "bot_id": "28:bot",
                "user_aad_id": p.subject_id,
                "user_mri": f"29:{p.subject_id}",
                "updated_at": START,
            }
            for p in people
        ],
        CardPost: [
            {
                "ticket_ref": f"SW-{1000 + t.id}",
                "conversation_id": "19:approvals@thread.tacv2",
                "activity_id": f"activity-{t.id}",
                "service_url": "https://smba.example/amer/",
                "audience": "approvers",
                "created_at": START,
            }
            for t in tickets
        ],
        CardView: [
            {"ticket_ref": f"SW-{1000 + t.id}", "version": 1, "view": {}} for t in tickets[1:]
        ],
        AuditEvent: [
            {"occurred_at": START, "actor": "system", "action": action, "ticket_ref": f"SW-{n}"}
            for n in range(1001, 1001 + len(tickets))
            for action in ("ticket.created", "ticket.approved", "ticket.completed")
        ],
        OutboxMessage: [
            {
                "key": f"message-{n}",
                "target": "user",
                "recipient": "someone",
                "payload": {},
                "state": "sent",
                "next_attempt_at": START,
                "created_at": START,
            }
            for n in range(len(people))
        ],
    }
    async with write_transaction(sessions) as session:
        for table, values in rows.items():
            for start in range(0, len(values), 2000):
                await session.execute(insert(table), values[start : start + 2000])


async def analyze(engine: AsyncEngine) -> None:
    """Give the planner the tables' statistics: on SQLite the service's own refresh (at start
    and daily), on PostgreSQL the ``ANALYZE`` its autovacuum runs."""
    if await refresh_planner_statistics(engine):
        return
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.exec_driver_sql("ANALYZE")
        await connection.commit()


@contextmanager
def capturing(world: World) -> Iterator[None]:
    """Keep every statement the engine sends (with its parameters) while the block runs."""

    def keep(_conn: Connection, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        world.statements.append((statement, parameters))

    event.listen(world.engine.sync_engine, "before_cursor_execute", keep)
    try:
        yield
    finally:
        event.remove(world.engine.sync_engine, "before_cursor_execute", keep)


_PLANNED = re.compile(r"\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b", re.IGNORECASE)
# SQLite's line for reading a whole table: "SCAN tickets" (with no index named after it).
_SQLITE_SCAN = re.compile(r"SCAN (\w+)(?: AS \w+)?")


async def full_scans(world: World) -> list[str]:
    """Each captured statement whose plan reads a whole table that can grow: the table and
    the statement."""
    found = []
    postgres = world.engine.dialect.name == "postgresql"
    async with world.engine.connect() as connection:
        for statement, parameters in world.statements:
            if not _PLANNED.match(statement):
                continue
            arguments = parameters[0] if isinstance(parameters, list) else parameters
            if postgres:
                result = await connection.exec_driver_sql(
                    f"EXPLAIN (FORMAT JSON) {statement}", arguments
                )
                plan = result.scalar_one()
                plan = json.loads(plan) if isinstance(plan, str) else plan
                tables = list(_sequential_scans(plan[0]["Plan"]))
            else:
                result = await connection.exec_driver_sql(
                    f"EXPLAIN QUERY PLAN {statement}", arguments
                )
                tables = _sqlite_scans([row[-1] for row in result.all()], statement)
            found += [
                f"{table}: {_shown(statement)}"
                for table in tables
                if table in metadata.tables and table not in SMALL_TABLES
            ]
    return found


def _shown(statement: str) -> str:
    """The statement from its FROM on (its columns say nothing about its plan), shortened."""
    words = " ".join(statement.split())
    return words[max(0, words.find(" FROM ")) :][:_SHOWN_SQL]


def _sqlite_scans(plan: list[str], statement: str) -> list[str]:
    """The tables SQLite reads whole. It says "SCAN t" also for a walk of ``t`` in its own
    order that the LIMIT stops after a page (the newest tickets, by rowid), which PostgreSQL
    calls a backward index scan; such a walk (in order: no sort step, and a LIMIT) reads a
    page, as the index scans allowed on PostgreSQL do."""
    if " LIMIT " in statement and not any(line.startswith("USE TEMP B-TREE") for line in plan):
        return []
    matches = (_SQLITE_SCAN.fullmatch(line) for line in plan)
    return [match.group(1) for match in matches if match]


def _sequential_scans(node: dict[str, Any]) -> Iterator[str]:
    if node.get("Node Type") == "Seq Scan":
        yield str(node.get("Relation Name"))
    for child in node.get("Plans", []):
        yield from _sequential_scans(child)


async def say(world: World, person: Person, words: str) -> Reply:
    [reply] = await world.dialogue.on_message(incoming(person, words))
    return reply


async def next_page(world: World, shown: Reply) -> Reply:
    """A click on the Next button of ``shown``'s card."""
    assert shown.card is not None, shown.text
    [action] = shown.card["actions"]
    return await world.dialogue.on_card_action(incoming(IT_ADMIN, value=action["data"]))


USERS = (
    "users",
    "users paused",
    "users failing",
    "users ok",
    "users error:permission",
    "users name:ann",
    "users name:zoë.ng",  # the UPN's start
    "users failing name:a",
)
TICKETS = (
    "tickets",
    "tickets all",
    "tickets failed",
    "tickets completed",
    "tickets manual",
    "tickets all name:émile",
    "tickets completed name:bea.okafor",
    "tickets error:permission",
    "tickets failed error:no_mailbox",
    "tickets all error:not_in_scope name:émile",
)


async def run_every_turn(world: World) -> None:
    """The turns people and IT take, each answered as it would be in Teams."""
    for words in USERS + TICKETS:
        first = await say(world, IT_ADMIN, words)
        assert first.card is not None, (words, first.text)
        if "actions" in first.card:
            second = await next_page(world, first)
            assert second.card is not None, (words, second.text)
    enrolled_and_asking = staff(world.people[16])  # ticket 16 awaits approval
    for person in (enrolled_and_asking, staff(world.people[1]), IT_ADMIN):
        assert (await say(world, person, "status")).text
    waiting = world.ticket_with("awaiting_approval")
    failed = world.ticket_with("failed")
    ref = f"SW-{1000 + waiting.id}"
    assert (await say(world, IT_ADMIN, f"ticket {ref}")).card is not None
    click = {"ticket": ref, "version": 3}
    refreshed = await world.dialogue.on_card_action(
        incoming(APPROVER, value={"verb": cards.Verb.REFRESH, **click})
    )
    assert refreshed.card is not None
    approved = await world.dialogue.on_card_action(
        incoming(APPROVER, value={"verb": cards.Verb.APPROVE, **click})
    )
    assert approved.card is not None, approved.text
    retry = {"verb": cards.Verb.RETRY, "ticket": f"SW-{1000 + failed.id}", "version": 3}
    assert (await world.dialogue.on_card_action(incoming(IT_ADMIN, value=retry))).card
    cancel = {"verb": cards.Verb.CANCEL, "ticket": f"SW-{1000 + failed.id}"}
    await world.dialogue.on_card_action(incoming(IT_ADMIN, value=cancel))


async def run_every_lookup(world: World) -> None:
    """What turns and their deliveries look up besides: one person, one ticket, a chat, the
    cards posted about a ticket."""
    someone = world.people[1234]
    for who in (someone.upn.upper(), someone.mailbox, someone.subject_id):
        assert await world.service.enrollments_of(who)
    queries = TicketQueries(world.sessions)
    assert await queries.open_ticket_of(world.people[16].subject_id) is not None
    assert await queries.ticket_by_id(world.tickets[-1].id) is not None
    assert await queries.active_enrollment(someone.subject_id) is not None
    assert await world.service.get_ticket(f"SW-{1000 + world.tickets[5].id}") is not None
    assert await world.conversations.for_user(someone.subject_id) is not None
    assert await world.conversations.mris_of([someone.subject_id, world.people[2].subject_id])
    await world.conversations.for_role(ChannelRole.IT)
    posts = CardPostStore(world.sessions)
    assert await posts.for_ticket(f"SW-{1000 + world.tickets[0].id}")
    unviewed = f"SW-{1000 + world.tickets[0].id}"  # the one ticket without a stored view
    await posts.newest_view(dataclasses.replace(sample_ticket(), ref=unviewed))


async def test_every_query_a_turn_runs_reads_through_an_index(world: World) -> None:
    with capturing(world):
        await run_every_turn(world)
        await run_every_lookup(world)
    assert len(world.statements) > 60, "the turns ran their queries"
    assert await full_scans(world) == []


async def test_a_missing_index_is_caught(world: World) -> None:
    """The check above is worth something only if it fails without an index the turns need."""
    async with world.engine.begin() as connection:
        for index in ("by_name", "by_pause", "by_error"):
            await connection.execute(text(f"DROP INDEX ix_enrollments_list_{index}"))
    await analyze(world.engine)
    with capturing(world):
        await say(world, IT_ADMIN, "users")
    scans = await full_scans(world)
    assert scans and all(scan.startswith("enrollments: ") for scan in scans), scans
