"""Access reconciliation against the sandbox tenant: each kind of drift found after the change
that causes it, ignored drift staying quiet, and a steady run costing two Graph requests."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from syncwarden.connectors.graph.directory_changes import GraphDirectoryChanges
from syncwarden.connectors.scheduling.builtin import BuiltinScheduling
from syncwarden.connectors.scheduling.ports import Profile
from syncwarden.core.db import session_factory, write_transaction
from syncwarden.m365 import Microsoft365
from syncwarden.sandbox import directory_admin as admin
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.sync.drift import DriftKind
from syncwarden.sync.reconcile import Reconciler
from syncwarden.sync.reconcile_records import DriftRecord
from syncwarden.workflows.outbox import OutboxMessage
from syncwarden.workflows.records import Enrollment
from syncwarden.workflows.unit_of_work import UnitsOfWork
from tests.support.enrollments import close_ticket, enroll, ticket_under_way

GROUP = "bc490a5b-597c-4082-babe-7ef541eb3972"  # Calendar Sync (Graph): Kai, and a nested group
KAI = "kai.nakamura-ellis@example.edu"
AVERY = "avery.quinlan@example.edu"
SASHA = "sasha.verhoeven@example.edu"


@dataclasses.dataclass
class World:
    sessions: async_sessionmaker[AsyncSession]
    tenant: SandboxTenant
    reconciler: Reconciler

    def id_of(self, upn: str) -> str:
        return self.tenant.seed.user_ids[upn]

    def kinds(self, findings: object) -> set[tuple[DriftKind, str]]:
        upn_of = {user_id: upn for upn, user_id in self.tenant.seed.user_ids.items()}
        return {(f.kind, upn_of.get(f.subject_id, f.subject_id)) for f in findings}  # type: ignore[attr-defined]


@pytest.fixture
async def world(migrated_engine: AsyncEngine, tenant: SandboxTenant, m365: Microsoft365) -> World:
    sessions = session_factory(migrated_engine)
    scheduling = BuiltinScheduling(sessions, writes_mappings=True)
    for upn, profile in ((KAI, "P-kai"), (AVERY, "P-avery")):
        await enroll(sessions, tenant, upn, profile)
        await scheduling.upsert_profile(Profile(profile, upn, upn))
        await scheduling.upsert_mapping(profile, upn)
    reconciler = Reconciler(
        UnitsOfWork(sessions),
        GraphDirectoryChanges(m365.graph),
        m365.directory,
        scheduling,
        group_id=GROUP,
    )
    return World(sessions, tenant, reconciler)


def graph_requests(tenant: SandboxTenant) -> int:
    return len([r for r in tenant.requests if not r.path.startswith("/_sandbox")])


async def test_a_first_run_finds_the_drift_already_there_and_a_steady_run_costs_two_requests(
    world: World,
) -> None:
    first = await world.reconciler.run()
    assert first.full
    assert world.kinds(first.findings) == {(DriftKind.MISSING_MEMBER, AVERY)}
    assert world.kinds(first.news) == {(DriftKind.MISSING_MEMBER, AVERY)}
    world.tenant.clear_requests()
    steady = await world.reconciler.run()
    assert not steady.full
    assert (steady.graph_requests, graph_requests(world.tenant)) == (2, 2)
    assert world.kinds(steady.findings) == {(DriftKind.MISSING_MEMBER, AVERY)}
    assert steady.news == (), "known drift is not news twice"


async def test_each_change_made_by_hand_in_the_tenant_is_found_on_the_next_run(
    world: World,
) -> None:
    await world.reconciler.run()
    state = world.tenant.state
    admin.add_member_by_hand(state, GROUP, world.id_of(SASHA))
    admin.set_enabled(state, world.id_of(KAI), False)
    admin.change_primary_address(state, world.id_of(AVERY), "avery.q@example.edu")
    world.tenant.clear_requests()
    report = await world.reconciler.run()
    assert world.kinds(report.findings) == {
        (DriftKind.UNENROLLED_MEMBER, SASHA),
        (DriftKind.LEAVER, KAI),
        (DriftKind.MOVER, AVERY),
        (DriftKind.MISSING_MEMBER, AVERY),
    }
    assert world.kinds(report.news) == {
        (DriftKind.UNENROLLED_MEMBER, SASHA),
        (DriftKind.LEAVER, KAI),
        (DriftKind.MOVER, AVERY),
    }
    # Two delta rounds, and Sasha (never seen before) read once.
    assert report.graph_requests == 3

    admin.set_enabled(state, world.id_of(KAI), True)  # Kai is back
    report = await world.reconciler.run()
    assert (DriftKind.LEAVER, KAI) not in world.kinds(report.findings)
    assert report.resolved == 1


async def test_a_soft_deleted_person_is_a_leaver_and_a_restored_one_is_not(world: World) -> None:
    await world.reconciler.run()
    admin.soft_delete(world.tenant.state, world.id_of(KAI))
    report = await world.reconciler.run()
    assert (DriftKind.LEAVER, KAI) in world.kinds(report.findings)
    [leaver] = [f for f in report.findings if f.kind is DriftKind.LEAVER]
    assert leaver.fact("account") == "deleted"
    admin.restore(world.tenant.state, world.id_of(KAI))
    report = await world.reconciler.run()
    assert (DriftKind.LEAVER, KAI) not in world.kinds(report.findings)


async def test_an_ignored_finding_stays_quiet_until_its_facts_change(world: World) -> None:
    first = await world.reconciler.run()
    [missing] = first.findings
    async with write_transaction(world.sessions) as session:
        await session.execute(
            update(DriftRecord)
            .where(DriftRecord.key == missing.key)
            .values(ignored_fingerprint=missing.fingerprint)
        )
    admin.remove_member_by_hand(world.tenant.state, GROUP, world.id_of(KAI))
    report = await world.reconciler.run()
    assert world.kinds(report.news) == {(DriftKind.MISSING_MEMBER, KAI)}
    assert report.ignored == {missing.key}, "still open, still ignored"

    async with write_transaction(world.sessions) as session:  # Avery's enrollment moves on
        await session.execute(
            update(Enrollment)
            .where(Enrollment.subject_id == world.id_of(AVERY))
            .values(mailbox="aquinlan@example.edu")
        )
    report = await world.reconciler.run()
    assert (DriftKind.MISSING_MEMBER, AVERY) in world.kinds(report.news), "new facts: news again"
    assert report.ignored == frozenset()


async def test_an_expired_link_starts_a_full_round_that_still_finds_a_deletion(
    world: World,
) -> None:
    """A full round does not report who was deleted while the link was dead; the people it did
    not mention are read one by one."""
    await world.reconciler.run()
    admin.hard_delete(world.tenant.state, world.id_of(KAI))
    world.tenant.state.directory_delta_tokens.clear()  # Graph no longer knows the links
    report = await world.reconciler.run()
    assert report.full
    assert (DriftKind.LEAVER, KAI) in world.kinds(report.findings)
    async with world.sessions() as session:
        stored = (await session.scalars(select(DriftRecord.kind))).all()
    assert "leaver" in stored


async def test_news_is_told_to_it_once_in_the_commit_that_records_it(world: World) -> None:
    await world.reconciler.run()
    await world.reconciler.run()  # nothing new: nothing more to say
    async with world.sessions() as session:
        told = (await session.scalars(select(OutboxMessage))).all()
    assert [(row.target, row.recipient) for row in told] == [("channel", "it")]
    assert "Avery Quinlan: enrolled but not in the sync group" in told[0].payload["text"]


async def test_a_person_whose_ticket_is_under_way_is_left_to_the_ticket(world: World) -> None:
    """Between a ticket's group add and its enrollment the person is a member "not enrolled";
    that is the ticket at work, not drift, and IT is not asked to fix it."""
    await world.reconciler.run()
    ticket = await ticket_under_way(world.sessions, world.tenant, SASHA)
    admin.add_member_by_hand(world.tenant.state, GROUP, world.id_of(SASHA))  # the ticket's add
    report = await world.reconciler.run()
    assert (DriftKind.UNENROLLED_MEMBER, SASHA) not in world.kinds(report.findings)
    assert report.news == ()
    assert report.under_way == 1
    assert "1 people with a ticket under way" in str(report)

    await enroll(world.sessions, world.tenant, SASHA, "P-sasha")  # the ticket ends well
    await close_ticket(world.sessions, ticket, "completed")
    report = await world.reconciler.run()
    assert {kind for kind, upn in world.kinds(report.findings) if upn == SASHA} == {
        DriftKind.MAPPING_MISSING  # the fixture's scheduling knows no P-sasha: still checked
    }


async def test_a_finding_recorded_before_the_ticket_stays_open_until_the_ticket_ends(
    world: World,
) -> None:
    await world.reconciler.run()
    admin.add_member_by_hand(world.tenant.state, GROUP, world.id_of(SASHA))
    first = await world.reconciler.run()
    assert world.kinds(first.news) == {(DriftKind.UNENROLLED_MEMBER, SASHA)}
    ticket = await ticket_under_way(world.sessions, world.tenant, SASHA)  # IT chose Adopt

    during = await world.reconciler.run()
    assert during.resolved == 0, "the ticket decides, not this run"
    async with world.sessions() as session:
        record = await session.get(DriftRecord, f"unenrolled_member:{world.id_of(SASHA)}")
    assert record is not None and record.resolved_at is None

    # A failed ticket is still open (IT may retry it) and already told; cancelled, it is over.
    await close_ticket(world.sessions, ticket, "cancelled")
    after = await world.reconciler.run()
    assert (DriftKind.UNENROLLED_MEMBER, SASHA) in world.kinds(after.findings)
    assert after.news == (), "the same difference, already told"


async def test_a_leaver_is_reported_even_with_a_ticket_open(world: World) -> None:
    await world.reconciler.run()
    await ticket_under_way(world.sessions, world.tenant, KAI, status="awaiting_approval")
    admin.set_enabled(world.tenant.state, world.id_of(KAI), False)
    report = await world.reconciler.run()
    assert (DriftKind.LEAVER, KAI) in world.kinds(report.news)
