"""A change and the news of it commit together: a crash right after the commit loses nothing,
and a change that is rolled back announces nothing.

The use cases run against the real outbox; the "crash" is a BaseException raised where the
process would die (after the commit, before anything is dispatched), which no handler catches.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.m365 import Microsoft365
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.workflows.audit import AuditEvent, record_audit
from syncwarden.workflows.outbox import OutboxMessage
from syncwarden.workflows.outbox_dispatch import OutboxDispatcher
from syncwarden.workflows.ports import Channel, Notification, NotificationKind
from syncwarden.workflows.service import WorkflowService
from syncwarden.workflows.unit_of_work import UnitsOfWork
from tests.support.workflow import Harness, workflow_harness


class Killed(BaseException):
    """The process dying: nothing in the product catches it."""


async def kill() -> None:
    raise Killed


@pytest.fixture
async def crashing(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, m365: Microsoft365
) -> AsyncIterator[tuple[Harness, WorkflowService]]:
    """The harness, and a second service over the same database that dies after each commit."""
    async with workflow_harness(migrated_engine, tenant, m365) as h:
        units = UnitsOfWork(h.sessions, clock=h.clock, on_queued=kill)
        service = WorkflowService(
            units,
            directory=h.m365.directory,
            scheduling=h.scheduling,
            roster=h.roster,
            approvals=h.approvals,
            provisioning=h.provisioning,
            clock=h.clock,
        )
        yield h, service


async def outbox_keys(h: Harness) -> list[str]:
    async with h.sessions() as session:
        return sorted((await session.scalars(select(OutboxMessage.key))).all())


async def test_a_kill_right_after_the_commit_leaves_every_message_queued(
    crashing: tuple[Harness, WorkflowService],
) -> None:
    h, service = crashing
    with pytest.raises(Killed):
        await service.request_enrollment(h.person("sasha"))
    ref = "SW-1001"
    assert (await h.service.get_ticket(ref)) is not None, "the ticket was committed"
    casey = h.tenant.seed.user_ids["casey.lindqvist@example.edu"]
    keys = await outbox_keys(h)
    assert f"{ref}:status:created" in keys
    assert f"{ref}:approval_requested:channel" in keys
    assert f"{ref}:approval_requested:{casey}" in keys

    with pytest.raises(Killed):
        await service.decide(ref, h.person("casey"), approve=True)
    sasha = h.person("sasha").id
    keys = await outbox_keys(h)
    assert f"{ref}:approved:{sasha}" in keys
    assert any(k.startswith(f"{ref}:status:approve:") for k in keys)
    assert any(k.startswith(f"{ref}:card:") for k in keys)

    # The next process's dispatcher delivers what the dead one queued.
    before = len(h.notifier.sent)
    await OutboxDispatcher(h.sessions, h.notifier, clock=h.clock).dispatch_due()
    delivered = {s.key for s in h.notifier.sent[before:]}
    assert f"{ref}:approval_requested:channel" in delivered
    assert f"{ref}:approved:{sasha}" in delivered


async def test_a_change_rolled_back_queues_nothing(h: Harness) -> None:
    """The unit of work fails after its change and its message: neither remains."""
    units = UnitsOfWork(h.sessions, clock=h.clock)

    class RefusedError(Exception):
        pass

    async def change_then_fail() -> None:
        async with units() as work:
            record_audit(work.session, actor="test", action="never.happened")
            await work.session.flush()
            note = Notification(NotificationKind.STATUS, None, "no")
            work.to_channel(Channel.IT, note, key="no")
            raise RefusedError

    with pytest.raises(RefusedError):
        await change_then_fail()
    async with h.sessions() as session:
        actions = (await session.scalars(select(AuditEvent.action))).all()
    assert "never.happened" not in actions
    assert await outbox_keys(h) == []


async def test_a_repeated_key_in_a_later_unit_keeps_that_units_change(h: Harness) -> None:
    """A use case repeated after a crash queues the same keys again: the repeat is dropped and
    the rest of its change still commits (a plain insert would abort the whole transaction)."""
    units = UnitsOfWork(h.sessions, clock=h.clock)
    note = Notification(NotificationKind.STATUS, None, "once")
    async with units() as work:
        work.to_channel(Channel.IT, note, key="same")
    async with units() as work:
        work.to_channel(Channel.IT, note, key="same")
        work.to_channel(Channel.IT, note, key="new")
    assert await outbox_keys(h) == ["new", "same"]


async def test_audit_rows_of_a_unit_commit_in_the_order_they_were_recorded(h: Harness) -> None:
    """Audit rows recorded on a unit's session and through the unit itself are written together
    when it commits, in one statement and in the order they were recorded (the export's order),
    and both wait for the commit."""
    units = UnitsOfWork(h.sessions, clock=h.clock)
    async with units() as work:
        record_audit(work.session, actor="test", action="first")
        work.audit(actor="test", action="second")
        record_audit(work.session, actor="test", action="third")
        async with h.sessions() as elsewhere:
            seen = (await elsewhere.scalars(select(AuditEvent.action))).all()
        assert seen == []
    async with h.sessions() as session:
        actions = (await session.scalars(select(AuditEvent.action).order_by(AuditEvent.id))).all()
    assert actions == ["first", "second", "third"]
