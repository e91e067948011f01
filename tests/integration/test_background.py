"""The process's own work: an approved ticket is provisioned without anyone calling the runner."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from syncwarden.background import (
    WEEKLY_DIGEST,
    BackgroundWork,
    Job,
    declared_jobs,
    last_due,
    logged_job,
)
from syncwarden.connectors.scheduling.ports import Profile
from syncwarden.core.db import create_engine, session_factory
from syncwarden.job_runs import last_run, record_run
from syncwarden.m365 import build_microsoft365
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.workflow_wiring import build_workflows
from syncwarden.workflows.model import TicketStatus
from syncwarden.workflows.outbox import OutboxMessage
from syncwarden.workflows.ports import Person
from tests.support.m365 import sandbox_settings


async def test_background_runner_provisions_approved_tickets(
    migrated_engine: AsyncEngine, tenant: SandboxTenant
) -> None:
    settings = sandbox_settings(
        tenant,
        graph={"sync_group_id": tenant.seed.group_ids["Calendar Sync (Graph)"]},
        approvals={"approvers_group_id": tenant.seed.group_ids["Calendar Sync Approvers"]},
    )
    m365 = build_microsoft365(settings)
    sessions = session_factory(migrated_engine)
    workflows = build_workflows(settings, sessions, m365)
    assert workflows is not None
    assert [job.id for job in declared_jobs(settings, workflows)] == [
        "approvals.check_pending",
        "access.expiry",
        "access.reviews",
        "credentials.scan",
        "access.reconcile",
        "credentials.weekly_digest",
        "sync.run",
        "sync.requested",
        "sync.failure_digest",
        "sync.subscriptions",
    ]
    leased = [job.id for job in declared_jobs(settings, workflows) if not job.singleton]
    assert leased == ["sync.run", "sync.requested"], "the rest run on one replica at a time"
    with_scim = settings.model_copy(
        update={"scim": settings.scim.model_copy(update={"enabled": True})}
    )
    [catch_up] = [job for job in declared_jobs(with_scim, workflows) if job.id.startswith("scim.")]
    assert (catch_up.id, catch_up.singleton) == ("scim.catch_up", True)
    upkeep = [j for j in declared_jobs(settings, workflows, migrated_engine) if "database" in j.id]
    if migrated_engine.dialect.name == "sqlite":  # PostgreSQL's autovacuum keeps statistics
        [statistics] = upkeep
        assert (statistics.id, statistics.every_minutes) == ("database.statistics", 24 * 60)
        await statistics.run()
        async with migrated_engine.connect() as connection:
            kept = await connection.exec_driver_sql("SELECT count(*) FROM sqlite_stat1")
            assert kept.scalar_one() > 0, "the planner has statistics"
    else:
        assert upkeep == []
    await workflows.scheduling.upsert_profile(
        Profile("prof-sasha", "Sasha", "sasha.verhoeven@example.edu")
    )
    background = BackgroundWork(settings, workflows)
    await background.start()
    try:
        sasha = Person(
            tenant.seed.user_ids["sasha.verhoeven@example.edu"],
            "Sasha Verhoeven",
            "sasha.verhoeven@example.edu",
        )
        casey = Person(
            tenant.seed.user_ids["casey.lindqvist@example.edu"],
            "Casey Lindqvist",
            "casey.lindqvist@example.edu",
        )
        ticket = (await workflows.service.request_enrollment(sasha)).ticket
        assert ticket is not None
        assert (await workflows.service.decide(ticket.ref, casey, approve=True)).ok
        await asyncio.wait_for(workflows.runner.idle.wait(), 60)
        done = await workflows.service.get_ticket(ticket.ref)
        assert done is not None and done.status == TicketStatus.COMPLETED
        assert sasha.id in tenant.group_member_ids(tenant.seed.group_ids["Calendar Sync (Graph)"])
        async with sessions() as session:
            keys = (await session.scalars(select(OutboxMessage.key))).all()
        assert f"{ticket.ref}:3:send_instructions" in keys, (
            "instructions wait in the outbox for Teams"
        )
    finally:
        await background.stop()
        await m365.aclose()


async def test_a_singleton_job_runs_on_one_replica_at_a_time(database_url: str) -> None:
    """Two replicas (two engines, two pools) fire the same job together: on PostgreSQL one runs
    and the other skips; SQLite serves one host, so there both run (and nothing is locked)."""
    first, second = create_engine(database_url), create_engine(database_url)
    inside = asyncio.Event()
    release = asyncio.Event()
    ran: list[str] = []

    async def slow() -> None:
        ran.append("first")
        inside.set()
        await release.wait()

    async def quick() -> None:
        ran.append("second")

    try:

        async def on_the_first_replica() -> None:
            await logged_job(Job("test.digest", 60, slow), first)()

        running = asyncio.create_task(on_the_first_replica())
        await inside.wait()
        await logged_job(Job("test.digest", 60, quick), second)()
        release.set()
        await running
        await logged_job(Job("test.digest", 60, quick), second)()  # the lock was released
    finally:
        await first.dispose()
        await second.dispose()
    postgres = database_url.startswith("postgresql")
    assert ran == (["first", "second"] if postgres else ["first", "second", "second"])


def test_the_last_due_time_of_a_weekly_trigger() -> None:
    trigger = CronTrigger(timezone="Europe/London", **WEEKLY_DIGEST)
    wednesday = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    assert last_due(trigger, wednesday) == datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    monday_early = datetime(2026, 11, 30, 7, 59, tzinfo=UTC)
    assert last_due(trigger, monday_early) == datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


async def test_a_weekly_job_missed_while_down_runs_at_start_and_one_done_waits(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The digest is calendar-bound: a restart neither postpones it a week nor repeats it."""
    settings = sandbox_settings(
        tenant, graph={"sync_group_id": tenant.seed.group_ids["Calendar Sync (Graph)"]}
    )
    m365 = build_microsoft365(settings)
    workflows = build_workflows(settings, session_factory(migrated_engine), m365)
    assert workflows is not None
    ran = asyncio.Event()

    async def record_then_tell(engine: AsyncEngine, job_id: str, at: datetime) -> None:
        await record_run(engine, job_id, at)
        if job_id == "credentials.weekly_digest":
            ran.set()  # the digest ran and its run is on record

    monkeypatch.setattr("syncwarden.background.record_run", record_then_tell)
    now = datetime.now(UTC)
    due = last_due(CronTrigger(timezone=settings.scheduler.timezone, **WEEKLY_DIGEST), now)
    assert due is not None
    try:
        await record_run(migrated_engine, "credentials.weekly_digest", due - timedelta(days=1))
        missed = BackgroundWork(settings, workflows, engine=migrated_engine)
        await missed.start()
        try:
            await asyncio.wait_for(ran.wait(), 30)
        finally:
            await missed.stop()
        recorded = await last_run(migrated_engine, "credentials.weekly_digest")
        assert recorded is not None and recorded >= due

        done = BackgroundWork(settings, workflows, engine=migrated_engine)
        await done.start()
        try:
            upcoming = done.next_run("credentials.weekly_digest")
        finally:
            await done.stop()
        assert upcoming is not None and upcoming > now + timedelta(hours=1)
    finally:
        await m365.aclose()


async def test_a_stop_interrupts_a_scheduled_run_under_way_without_reporting_it_as_failed(
    migrated_engine: AsyncEngine,
    tenant: SandboxTenant,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A run that does not end by itself is interrupted a few seconds into the stop; the
    scheduler, left to find the cancelled run, would log it as a job raising an exception."""
    monkeypatch.setattr("syncwarden.background.JOB_STOP_GRACE_SECONDS", 0.05)
    settings = sandbox_settings(
        tenant, graph={"sync_group_id": tenant.seed.group_ids["Calendar Sync (Graph)"]}
    )
    m365 = build_microsoft365(settings)
    workflows = build_workflows(settings, session_factory(migrated_engine), m365)
    assert workflows is not None
    inside = asyncio.Event()

    async def never_ends() -> None:
        inside.set()
        await asyncio.Event().wait()

    hanging = Job("test.hangs", 60, never_ends, run_at_start=True, singleton=False)
    monkeypatch.setattr("syncwarden.background.declared_jobs", lambda *_: [hanging])
    try:
        background = BackgroundWork(settings, workflows, engine=migrated_engine)
        with capture_logs() as logs:
            await background.start()
            async with asyncio.timeout(30):
                await inside.wait()
                await background.stop()  # without the interruption: waits on the run for ever
    finally:
        await m365.aclose()
    assert {"event": "job.interrupted", "job": "test.hangs"}.items() <= next(
        line for line in logs if line.get("event") == "job.interrupted"
    ).items()
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.records
