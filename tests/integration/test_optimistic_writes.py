"""A decision read without a lock and written all at once, guarded by its row's version.

An approval reads the ticket outside any transaction and writes the ticket, its decision, its
steps, the audit trail and the outbox only if the ticket's row is the version that was read
(``tickets.row_version``, moved by the database on every update): on PostgreSQL as one
statement, on SQLite in one trip that takes the write lock (``BEGIN IMMEDIATE``, the writes,
``COMMIT`` or ``ROLLBACK``). Someone else's change in between must make it write nothing at
all, and the decision is then taken again on what is there now.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import cast

import pytest
import sqlalchemy.exc
from sqlalchemy import Table, bindparam, func, inspect, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from syncwarden.core.combined_writes import run_writes
from syncwarden.core.db import session_factory, utc_now, write_transaction
from syncwarden.core.row_writes import ROW_VERSION, RowsInsert, RowUpdate
from syncwarden.m365 import Microsoft365
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.workflows import commands
from syncwarden.workflows.audit import AuditEvent
from syncwarden.workflows.model import TicketStatus
from syncwarden.workflows.outbox import OutboxMessage
from syncwarden.workflows.ports import Notification, NotificationKind
from syncwarden.workflows.records import Decision, Step, Ticket, ticket_id_from_ref
from syncwarden.workflows.service import ActionOutcome
from syncwarden.workflows.ticket_rows import locked_ticket, ticket_and_row_version
from syncwarden.workflows.unit_of_work import RowChangedError, UnitOfWork, UnitsOfWork
from tests.support.workflow import workflow_harness

TICKETS = cast(Table, Ticket.__table__)
DECISIONS = cast(Table, Decision.__table__)
A_DECISION = {
    "approver_id": "approver",
    "approver_name": "Approver",
    "approve": True,
    "comment": "",
}
AUDIT = cast(Table, AuditEvent.__table__)
HELLO = Notification(NotificationKind.RECEIVED, None, "hello")


async def a_ticket(
    sessions: async_sessionmaker[AsyncSession], upn: str = "noor.haddad@example.edu"
) -> int:
    name = upn.split("@")[0].replace(".", " ").title()
    async with write_transaction(sessions) as session:
        ticket = Ticket(
            kind="enroll",
            status=TicketStatus.AWAITING_APPROVAL.value,
            subject_id=f"subject-{upn}",
            subject_upn=upn,
            subject_name=name,
            subject_mail=upn,
            requester_id=f"subject-{upn}",
            requester_upn=upn,
            requester_name=name,
            mailbox=upn,
        )
        session.add(ticket)
        await session.flush()
        return ticket.id


async def a_ticket_with_decisions_and_steps(sessions: async_sessionmaker[AsyncSession]) -> int:
    """A ticket with two decisions (one against) and two steps, each written out of order."""
    ticket_id = await a_ticket(sessions)
    async with write_transaction(sessions) as session:
        for approver, approve in (("approver-b", True), ("approver-a", False)):
            session.add(
                Decision(
                    **{**A_DECISION, "approver_id": approver, "approve": approve},
                    ticket_id=ticket_id,
                    decided_at=utc_now(),
                )
            )
        for position in (2, 1):
            session.add(
                Step(
                    ticket_id=ticket_id,
                    position=position,
                    name=f"step-{position}",
                    state="pending",
                    idempotency_key=f"rows-{ticket_id}-{position}",
                    params={"n": position},
                )
            )
    return ticket_id


VERSION_OF_A_TICKET = select(TICKETS.c[ROW_VERSION]).where(TICKETS.c.id == bindparam("ticket_id"))


async def row_version(session: AsyncSession, ticket_id: int) -> int:
    version = await session.scalar(VERSION_OF_A_TICKET, {"ticket_id": ticket_id})
    assert isinstance(version, int)
    return version


async def version_read_by(work: UnitOfWork, ticket_id: int) -> int:
    """The ticket's row version, read the one way an optimistic unit of work reads."""
    [(version,)] = await work.rows(VERSION_OF_A_TICKET, {"ticket_id": ticket_id})
    assert isinstance(version, int)
    return version


async def someone_else_changes(sessions: async_sessionmaker[AsyncSession], ticket_id: int) -> None:
    async with write_transaction(sessions) as session:
        await session.execute(update(Ticket).where(Ticket.id == ticket_id).values(version=7))


async def what_landed(sessions: async_sessionmaker[AsyncSession], ticket_id: int) -> tuple:  # type: ignore[type-arg]
    async with sessions() as session:
        ticket = await session.get_one(Ticket, ticket_id)
        audits = await session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "guarded")
        )
        outbox = await session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.key == "guarded")
        )
    return ticket.status, ticket.version, audits, outbox


async def test_an_unchanged_row_lets_every_write_of_the_statement_land(
    migrated_engine: AsyncEngine,
) -> None:
    sessions = session_factory(migrated_engine)
    ticket_id = await a_ticket(sessions)
    other_id = await a_ticket(sessions, "ilse.brandt@example.edu")
    async with write_transaction(sessions) as session:
        version = await row_version(session, ticket_id)
        held = await run_writes(
            session,
            [
                RowsInsert(AUDIT, [{"actor": "a", "action": "guarded"}]),
                RowUpdate(TICKETS, other_id, {"status": "cancelled"}),
                RowUpdate(TICKETS, ticket_id, {"status": "rejected"}, unchanged_since=version),
            ],
        )
    assert held is True
    assert await what_landed(sessions, ticket_id) == ("rejected", 1, 1, 0)
    assert (await what_landed(sessions, other_id))[:2] == ("cancelled", 1)


async def test_a_changed_row_holds_back_the_statements_other_updates_too(
    migrated_engine: AsyncEngine,
) -> None:
    sessions = session_factory(migrated_engine)
    ticket_id = await a_ticket(sessions)
    other_id = await a_ticket(sessions, "ilse.brandt@example.edu")
    async with sessions() as reader:
        version = await row_version(reader, ticket_id)
    await someone_else_changes(sessions, ticket_id)
    async with write_transaction(sessions) as session:
        held = await run_writes(
            session,
            [
                RowUpdate(TICKETS, other_id, {"status": "cancelled"}),
                RowUpdate(TICKETS, ticket_id, {"status": "rejected"}, unchanged_since=version),
            ],
        )
    assert held is False
    assert (await what_landed(sessions, other_id))[:2] == ("awaiting_approval", 1)


async def test_a_row_changed_since_it_was_read_makes_the_commit_write_nothing(
    migrated_engine: AsyncEngine,
) -> None:
    sessions = session_factory(migrated_engine)
    ticket_id = await a_ticket(sessions)
    woken = []

    async def wake() -> None:
        woken.append(True)

    units = UnitsOfWork(sessions, on_queued=wake)

    async def decide_while_someone_else_changes_the_ticket() -> None:
        async with units.optimistic() as work:
            assert work.reads_unlocked
            version = await version_read_by(work, ticket_id)
            # Commits while we decide: a read that held the write lock would keep it waiting.
            await asyncio.wait_for(someone_else_changes(sessions, ticket_id), timeout=10)
            work.update(TICKETS, ticket_id, {"status": "rejected"}, unchanged_since=version)
            work.audit(actor="a", action="guarded")
            work.to_user("someone", HELLO, key="guarded")

    with pytest.raises(RowChangedError):
        await decide_while_someone_else_changes_the_ticket()
    assert await what_landed(sessions, ticket_id) == ("awaiting_approval", 7, 0, 0)
    assert woken == [], "nothing was queued, so nothing is to be sent"


async def test_sqlite_optimistic_work_has_no_session_and_writes_in_its_turn(
    migrated_engine: AsyncEngine,
) -> None:
    """On SQLite the optimistic unit of work reads on the driver's connection, with no
    session; the process's next writer waits only while its one trip runs, not from its read."""
    if migrated_engine.dialect.name != "sqlite":
        pytest.skip("the SQLite side of the optimistic unit of work")
    sessions = session_factory(migrated_engine)
    ticket_id = await a_ticket(sessions)
    other_id = await a_ticket(sessions, "ilse.brandt@example.edu")
    async with UnitsOfWork(sessions).optimistic() as work:
        with pytest.raises(RuntimeError, match="no session"):
            assert work.session
        version = await version_read_by(work, ticket_id)
        # Another writer of the same process, while this one decides, gets in at once.
        await asyncio.wait_for(someone_else_changes(sessions, other_id), timeout=10)
        work.update(TICKETS, ticket_id, {"status": "rejected"}, unchanged_since=version)
        work.audit(actor="a", action="guarded")
        work.to_user("someone", HELLO, key="guarded")
    assert await what_landed(sessions, ticket_id) == ("rejected", 1, 1, 1)
    assert (await what_landed(sessions, other_id))[:2] == ("awaiting_approval", 7)


async def test_every_update_by_any_writer_moves_the_row_version(
    migrated_engine: AsyncEngine,
) -> None:
    """The version is the database's, not the code's: an ORM update, a bare SQL update that
    leaves the column alone and one that sets nothing new each move it by one; an update that
    sets it itself keeps what it set."""
    sessions = session_factory(migrated_engine)
    ticket_id = await a_ticket(sessions)
    other_id = await a_ticket(sessions, "ilse.brandt@example.edu")
    versions = []
    async with write_transaction(sessions) as session:
        versions.append(await row_version(session, ticket_id))
        ticket = await session.get_one(Ticket, ticket_id)
        ticket.status = "rejected"
        await session.flush()
        versions.append(await row_version(session, ticket_id))
    async with write_transaction(sessions) as session:
        await session.execute(
            text("UPDATE tickets SET mailbox = 'x@example.edu' WHERE id = :i"), {"i": ticket_id}
        )
        versions.append(await row_version(session, ticket_id))
        await session.execute(
            text("UPDATE tickets SET status = status WHERE id = :i"), {"i": ticket_id}
        )
        versions.append(await row_version(session, ticket_id))
        await session.execute(
            text("UPDATE tickets SET row_version = 40 WHERE id = :i"), {"i": ticket_id}
        )
        versions.append(await row_version(session, ticket_id))
        assert await row_version(session, other_id) == 1
    assert versions == [1, 2, 3, 4, 40]


async def test_a_failed_sqlite_decision_leaves_nothing_and_the_next_goes_on(
    migrated_engine: AsyncEngine,
) -> None:
    """On SQLite the optimistic unit of work runs on the driver's connection, without a
    session: a write refused in the COMMIT's trip (here a decision for no ticket) comes back as
    SQLAlchemy's IntegrityError with nothing of it stored, as does a use case that raises, and
    the process's next writers (direct or through a session) are not held up."""
    if migrated_engine.dialect.name != "sqlite":
        pytest.skip("the SQLite side of the optimistic unit of work")
    sessions = session_factory(migrated_engine)
    ticket_id = await a_ticket(sessions)
    units = UnitsOfWork(sessions)

    async def decide_for_no_ticket() -> None:
        async with units.optimistic() as work:
            assert await locked_ticket(work.rows, ticket_id) is not None
            work.audit(actor="someone", action="test.refused_write")
            work.insert(DECISIONS, {**A_DECISION, "ticket_id": ticket_id + 1000})

    async def fail() -> None:
        async with units.optimistic() as work:
            work.audit(actor="someone", action="test.failed_use_case")
            raise RuntimeError("the use case failed")

    with pytest.raises(sqlalchemy.exc.IntegrityError):
        await decide_for_no_ticket()
    with pytest.raises(RuntimeError, match="the use case failed"):
        await fail()

    async def write(action: str, work: UnitOfWork) -> None:
        async with work:
            work.audit(actor="someone", action=action)

    # Each writer a task of its own, as clicks are: one that kept its turn would hold up the next
    # (here until the timeout) rather than let it through as a nested writer of the same task.
    for action, work in (("test.direct", units.optimistic()), ("test.through_a_session", units())):
        await asyncio.wait_for(asyncio.create_task(write(action, work)), timeout=10)
    async with sessions() as session:
        actions = (await session.scalars(select(AuditEvent.action).order_by(AuditEvent.id))).all()
    assert actions == ["test.direct", "test.through_a_session"]


async def test_sqlite_direct_reads_give_the_values_the_orm_loads(
    migrated_engine: AsyncEngine,
) -> None:
    """Read without SQLAlchemy's session, every column arrives as the ORM gives it: times
    aware and in UTC, JSON as objects, booleans as booleans."""
    if migrated_engine.dialect.name != "sqlite":
        pytest.skip("the SQLite side of the optimistic unit of work")
    sessions = session_factory(migrated_engine)
    ticket_id = await a_ticket_with_decisions_and_steps(sessions)
    async with UnitsOfWork(sessions).optimistic() as work:
        read = await locked_ticket(work.rows, ticket_id)
        assert await locked_ticket(work.rows, ticket_id + 1000) is None
    async with sessions() as session:
        loaded = await session.get_one(
            Ticket, ticket_id, options=[selectinload(Ticket.decisions), selectinload(Ticket.steps)]
        )
    assert read is not None
    assert [getattr(read, c.key) for c in TICKETS.c] == [getattr(loaded, c.key) for c in TICKETS.c]
    assert read.created_at.utcoffset() == timedelta(0)
    decided = [(d.approver_id, d.approve, d.decided_at) for d in read.decisions]
    assert decided == [(d.approver_id, d.approve, d.decided_at) for d in loaded.decisions]
    assert all(isinstance(approve, bool) for _, approve, _ in decided)
    assert [(s.position, s.params) for s in read.steps] == [(1, {"n": 1}), (2, {"n": 2})]


async def test_an_unlocked_unit_of_work_refuses_what_it_cannot_guard(
    migrated_engine: AsyncEngine,
) -> None:
    sessions = session_factory(migrated_engine)
    ticket_id = await a_ticket(sessions)
    units = UnitsOfWork(sessions)

    async def update_unguarded() -> None:
        async with units.optimistic() as work:
            work.update(TICKETS, ticket_id, {"status": "rejected"})

    async def change_through_the_session() -> None:
        async with units.optimistic() as work:
            ticket = await work.session.get_one(Ticket, ticket_id)
            ticket.status = "rejected"

    async def guard_two_rows() -> None:
        async with write_transaction(sessions) as session:
            version = await row_version(session, ticket_id)
            await run_writes(
                session,
                [
                    RowUpdate(TICKETS, ticket_id, {"status": "a"}, unchanged_since=version),
                    RowUpdate(TICKETS, ticket_id, {"status": "b"}, unchanged_since=version),
                ],
            )

    with pytest.raises(RuntimeError, match="only rows it read"):
        await update_unguarded()
    # SQLite's optimistic unit of work has no session to change things through.
    with pytest.raises(RuntimeError, match=r"only what it queues|no session"):
        await change_through_the_session()
    with pytest.raises(ValueError, match="at most one"):
        await guard_two_rows()
    assert (await what_landed(sessions, ticket_id))[:2] == ("awaiting_approval", 1)


async def test_two_approvals_at_the_same_moment_both_count(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, m365: Microsoft365
) -> None:
    """Each approver reads "no approvals yet"; the one who writes second must find the ticket
    changed and decide again, or the ticket waits forever with two approvals of two."""
    async with workflow_harness(
        migrated_engine, tenant, m365, approvals={"required_approvals": 2}
    ) as h:
        tickets = []
        for key in ("sasha", "rowan", "avery"):
            ticket = (await h.service.request_enrollment(h.person(key))).ticket
            assert ticket is not None
            tickets.append(ticket.ref)
        results = await asyncio.gather(
            *(
                h.service.decide(ref, h.person(approver), approve=True)
                for ref in tickets
                for approver in ("casey", "emerson")
            )
        )
        assert [r.outcome for r in results] == [ActionOutcome.DONE] * 6
        async with h.sessions() as session:
            statuses = (await session.scalars(select(Ticket.status).order_by(Ticket.id))).all()
            decisions = await session.scalar(select(func.count()).select_from(Decision))
            steps = (
                await session.execute(select(Step.ticket_id, func.count()).group_by(Step.ticket_id))
            ).all()
        assert statuses == [TicketStatus.PROVISIONING.value] * 3
        assert decisions == 6
        assert len(steps) == 3 and len({count for _, count in steps}) == 1
        cards = [s.ref for s in h.notifier.to("card")]
        assert sorted(set(cards)) == sorted(tickets)


async def test_the_ticket_read_as_rows_is_the_one_the_orm_loads_with_nothing_pending(
    migrated_engine: AsyncEngine,
) -> None:
    """The unlocked decision builds its ticket from plain rows: every column, each decision and
    each step once in order, the row's version, and no attribute history until it changes."""
    sessions = session_factory(migrated_engine)
    ticket_id = await a_ticket_with_decisions_and_steps(sessions)
    async with sessions() as session:
        read, version = await ticket_and_row_version(session, ticket_id)
        assert version == await row_version(session, ticket_id)
        loaded = await session.get_one(Ticket, ticket_id, options=[selectinload(Ticket.decisions)])
        columns = [column.key for column in TICKETS.c]
        assert read is not None and read not in session
        assert [getattr(read, c) for c in columns] == [getattr(loaded, c) for c in columns]
        assert [d.approver_id for d in read.decisions] == [d.approver_id for d in loaded.decisions]
        assert [(s.position, s.params) for s in read.steps] == [(1, {"n": 1}), (2, {"n": 2})]
    state = inspect(read)
    assert not any(state.attrs[c].history.has_changes() for c in columns)
    read.status = TicketStatus.APPROVED.value
    assert [c for c in columns if state.attrs[c].history.has_changes()] == ["status"]
    async with sessions() as session:
        assert await ticket_and_row_version(session, ticket_id + 1000) == (None, None)


async def test_after_two_changed_rows_the_third_try_takes_the_row_lock_and_decides(
    migrated_engine: AsyncEngine,
    tenant: SandboxTenant,
    m365: Microsoft365,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ticket someone keeps changing: both unlocked tries write nothing, the locked read
    (FOR UPDATE OF tickets, beside the outer joins) lets the third decide."""
    unlocked_reads: list[int] = []

    async def always_stale(session: AsyncSession, ticket_id: int) -> tuple[Ticket | None, int]:
        ticket, _version = await ticket_and_row_version(session, ticket_id)
        unlocked_reads.append(ticket_id)
        return ticket, 0  # no row has version 0: the guarded write lands nowhere

    monkeypatch.setattr(commands, "ticket_and_row_version", always_stale)
    async with workflow_harness(migrated_engine, tenant, m365) as h:
        ticket = (await h.service.request_enrollment(h.person("sasha"))).ticket
        assert ticket is not None
        result = await h.service.decide(ticket.ref, h.person("casey"), approve=True)
        assert result.outcome is ActionOutcome.DONE, result
        assert len(unlocked_reads) == 2
        async with h.sessions() as session:
            landed = await session.get_one(Ticket, ticket_id_from_ref(ticket.ref))
            decisions = await session.scalar(select(func.count()).select_from(Decision))
        assert landed.status == TicketStatus.PROVISIONING.value and decisions == 1
