"""The sync worker's leases: several processes split the enrollments, nobody syncs one twice."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from syncwarden.connectors.scheduling.builtin_appointments import BuiltinAppointments
from syncwarden.connectors.scheduling.ports import Appointment, Window
from syncwarden.core.db import create_engine, session_factory, write_transaction
from syncwarden.core.settings import SyncSettings
from syncwarden.m365 import Microsoft365
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.sync.alerts import SyncAlerts
from syncwarden.sync.engine import SyncEngine
from syncwarden.sync.errors import FailureKind
from syncwarden.sync.records import SyncState
from syncwarden.sync.worker import SyncWorker
from syncwarden.workflows.model import TicketKind, TicketStatus
from syncwarden.workflows.ports import NotificationKind
from syncwarden.workflows.records import Enrollment, Ticket
from tests.support.enrollments import enroll
from tests.support.notifier import RecordingNotifier, recording_units

AVERY = "avery.quinlan@example.edu"


async def enroll_many(engine: AsyncEngine, tenant: SandboxTenant, count: int) -> list[int]:
    """``count`` enrollments of one sandbox person under different profiles."""
    profiles = [f"P-{number}" for number in range(count)]
    return await enroll(session_factory(engine), tenant, AVERY, *profiles)


def worker_for(engine: AsyncEngine, m365: Microsoft365, owner: str) -> SyncWorker:
    sessions = session_factory(engine)
    settings = SyncSettings()
    sync = SyncEngine(sessions, m365.calendar, BuiltinAppointments(sessions), settings)
    return SyncWorker(sessions, sync, settings, owner=owner)


async def test_two_workers_split_200_enrollments_with_no_overlap(
    migrated_engine: AsyncEngine, database_url: str, tenant: SandboxTenant, m365: Microsoft365
) -> None:
    ids = await enroll_many(migrated_engine, tenant, 200)
    second_pool = create_engine(database_url)
    try:
        first = worker_for(migrated_engine, m365, "worker-a")
        second = worker_for(second_pool, m365, "worker-b")

        reports_a, reports_b = await asyncio.gather(first.run_all(), second.run_all())
    finally:
        await second_pool.dispose()

    synced_a = [r.enrollment_id for r in reports_a]
    synced_b = [r.enrollment_id for r in reports_b]
    assert sorted(synced_a + synced_b) == sorted(ids)  # everyone once, nobody twice
    assert not set(synced_a) & set(synced_b)
    assert all(r.ok for r in reports_a + reports_b)
    if "postgresql" in database_url:
        assert synced_a and synced_b  # SKIP LOCKED lets both make progress
    async with session_factory(migrated_engine)() as session:
        leases = (await session.scalars(select(SyncState.lease_owner))).all()
    assert set(leases) == {None}


async def test_a_crashed_workers_lease_runs_out_and_requests_are_served_first(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, m365: Microsoft365
) -> None:
    ids = await enroll_many(migrated_engine, tenant, 3)
    sessions = session_factory(migrated_engine)
    async with write_transaction(sessions) as session:
        session.add(
            SyncState(
                enrollment_id=ids[0],
                lease_owner="crashed",
                lease_expires_at=datetime.now(UTC) + timedelta(minutes=5),
                consecutive_failures=0,
            )
        )
    worker = worker_for(migrated_engine, m365, "worker-a")

    assert await worker.request([ids[0], ids[1]]) == 2
    served = await worker.run_requested()
    assert [r.enrollment_id for r in served] == [ids[1]]  # ids[0] is still leased

    async with write_transaction(sessions) as session:
        state = await session.get(SyncState, ids[0])
        assert state is not None
        state.lease_expires_at = datetime.now(UTC) - timedelta(seconds=1)
    served = await worker.run_requested()
    assert [r.enrollment_id for r in served] == [ids[0]]
    assert await worker.run_requested() == []


async def test_a_new_enrollment_is_synced_by_the_next_requested_run(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, m365: Microsoft365
) -> None:
    [enrollment] = await enroll_many(migrated_engine, tenant, 1)
    sessions = session_factory(migrated_engine)
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    await BuiltinAppointments(sessions).upsert(
        "P-0", [Appointment("A-1", "Client", start, start + timedelta(hours=1))]
    )
    async with write_transaction(sessions) as session:
        row = await session.get(Enrollment, enrollment)
        assert row is not None
        row.sync_requested_at = datetime.now(UTC)  # what the provisioning step does

    [report] = await worker_for(migrated_engine, m365, "w").run_requested()

    assert report.enrollment_id == enrollment and report.created == 1
    async with sessions() as session:
        row = await session.get(Enrollment, enrollment)
        assert row is not None and row.sync_requested_at is None


async def test_an_enrollment_is_not_synced_until_its_ticket_has_finished_provisioning(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, m365: Microsoft365
) -> None:
    """The mapping step writes the enrollment before the person is in the sync group, and
    Exchange refuses their mailbox until they are: a run in between must leave them alone
    rather than alert IT that they are not in the group."""
    [enrollment] = await enroll_many(migrated_engine, tenant, 1)
    sessions = session_factory(migrated_engine)
    async with write_transaction(sessions) as session:
        ticket = Ticket(
            kind=TicketKind.ENROLL.value,
            status=TicketStatus.PROVISIONING.value,
            subject_id=tenant.seed.user_ids[AVERY],
            subject_upn=AVERY,
            subject_name="Avery Quinlan",
            subject_mail=AVERY,
            requester_id=tenant.seed.user_ids[AVERY],
            requester_upn=AVERY,
            requester_name="Avery Quinlan",
            mailbox=AVERY,
            profile_id="P-0",
        )
        session.add(ticket)
        await session.flush()
        await session.execute(
            update(Enrollment)
            .where(Enrollment.id == enrollment)
            .values(created_by_ticket=ticket.id)
        )
    worker = worker_for(migrated_engine, m365, "w")
    assert await worker.request() == 1

    assert await worker.run_all() == []
    assert await worker.run_requested() == []

    async with write_transaction(sessions) as session:
        await session.execute(
            update(Ticket).where(Ticket.id == ticket.id).values(status="completed")
        )
    [report] = await worker.run_requested()
    assert report.enrollment_id == enrollment and report.ok, "the request waited for the ticket"


async def test_it_hears_of_a_first_failure_once_a_digest_and_the_recovery(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, m365: Microsoft365
) -> None:
    outside = "sasha.verhoeven@example.edu"
    sessions = session_factory(migrated_engine)
    [enrollment] = await enroll(sessions, tenant, outside)
    notifier = RecordingNotifier()
    alerts = SyncAlerts(recording_units(sessions, notifier))
    settings = SyncSettings()
    engine = SyncEngine(sessions, m365.calendar, BuiltinAppointments(sessions), settings)
    worker = SyncWorker(sessions, engine, settings, on_report=alerts.after_run)

    for _ in range(3):
        await worker.request([enrollment])
        [report] = await worker.run_requested()
        assert report.error_kind is FailureKind.NOT_IN_SCOPE

    alerts_sent = notifier.to("channel:it", NotificationKind.SYNC_ALERT)
    assert len(alerts_sent) == 1
    assert "not in the sync group" in alerts_sent[0].text and "Sasha" in alerts_sent[0].text
    assert await alerts.digest() == 1
    assert "1 people still failing" in notifier.to("channel:it")[-1].text

    tenant.add_group_member(tenant.seed.group_ids["Calendar Sync"], outside)
    tenant.propagate_access_policy(tenant.seed.app_ids["Syncwarden"])
    await worker.request([enrollment])
    [report] = await worker.run_requested()

    assert report.ok and report.recovered
    assert [s.kind for s in notifier.to("channel:it")][-1] is NotificationKind.SYNC_RECOVERED
    assert await alerts.digest() == 0


async def test_a_first_failure_whose_alert_died_with_the_process_is_alerted_by_the_next_run(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, m365: Microsoft365
) -> None:
    """The run's commit and its alert are two steps; a process killed between them must not
    leave IT unaware: the next failing run of the same episode queues the alert (once)."""
    outside = "sasha.verhoeven@example.edu"
    sessions = session_factory(migrated_engine)
    [enrollment] = await enroll(sessions, tenant, outside)
    settings = SyncSettings()
    engine = SyncEngine(sessions, m365.calendar, BuiltinAppointments(sessions), settings)
    died = SyncWorker(sessions, engine, settings)  # commits the run, never gets to alert
    await died.request([enrollment])
    [first] = await died.run_requested()
    assert first.error_kind is FailureKind.NOT_IN_SCOPE

    notifier = RecordingNotifier()
    alerts = SyncAlerts(recording_units(sessions, notifier))
    worker = SyncWorker(sessions, engine, settings, on_report=alerts.after_run)
    for _ in range(2):
        await worker.request([enrollment])
        await worker.run_requested()
    [alert] = notifier.to("channel:it", NotificationKind.SYNC_ALERT)
    assert "Sasha" in alert.text


class GatedSource(BuiltinAppointments):
    """The built-in source, holding each read until the test lets it through."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        gate: asyncio.Event,
        entered: asyncio.Event,
    ) -> None:
        super().__init__(sessions)
        self.gate, self.entered = gate, entered

    async def list_appointments(self, profile_id: str, window: Window) -> Sequence[Appointment]:
        self.entered.set()
        await self.gate.wait()
        return await super().list_appointments(profile_id, window)


async def test_a_long_run_keeps_its_lease_and_one_that_lost_it_commits_nothing(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, m365: Microsoft365
) -> None:
    sessions = session_factory(migrated_engine)
    [enrollment] = await enroll(sessions, tenant, AVERY)
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
    await BuiltinAppointments(sessions).upsert(
        "P-1", [Appointment("A-1", "Client", start, start + timedelta(minutes=50))]
    )
    gate, entered = asyncio.Event(), asyncio.Event()
    renewals: list[datetime] = []

    def renewed(_enrollment: int, until: datetime) -> None:
        renewals.append(until)
        gate.set()  # the source was held until the lease had been renewed at least once

    settings = SyncSettings()
    engine = SyncEngine(sessions, m365.calendar, GatedSource(sessions, gate, entered), settings)
    worker = SyncWorker(
        sessions,
        engine,
        settings,
        owner="worker-a",
        renew_every=0.01,
        on_lease_renewed=renewed,
    )

    await worker.request([enrollment])
    async with asyncio.timeout(30):  # without renewals the source would wait for ever
        [kept] = await worker.run_requested()

    assert kept.ok and renewals, "the lease was renewed while the run waited on its source"

    gate.clear()
    entered.clear()
    # Something to write, so the run commits (a quiet run's lease is checked by the quiet
    # write it joins; test_sync_quiet covers that one).
    await BuiltinAppointments(sessions).upsert(
        "P-1", [Appointment("A-1", "Client, moved", start, start + timedelta(minutes=50))]
    )
    slow = SyncWorker(sessions, engine, settings, owner="worker-a", renew_every=3600)
    await slow.request([enrollment])
    running = asyncio.create_task(slow.run_requested())
    await entered.wait()
    async with write_transaction(sessions) as session:  # its lease ran out; another took over
        await session.execute(
            update(SyncState)
            .where(SyncState.enrollment_id == enrollment)
            .values(lease_owner="worker-b")
        )
    async with sessions() as session:
        state = await session.get(SyncState, enrollment)
        assert state is not None
        link_before = state.delta_link
    gate.set()
    [lost] = await running

    assert not lost.ok and lost.skipped is not None and "nothing was committed" in lost.skipped
    async with sessions() as session:
        state = await session.get(SyncState, enrollment)
    assert state is not None
    assert (state.lease_owner, state.delta_link) == ("worker-b", link_before)
