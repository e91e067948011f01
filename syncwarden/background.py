"""Work the process does on its own: the provisioning runner and the scheduled jobs.

APScheduler only *triggers* jobs; each job reads its state from the database and is safe to run
twice or on two replicas at once (the approval check locks the rows it changes), so a missed or
doubled trigger does no harm. All jobs are declared here, in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.core.failures import report_unexpected
from syncwarden.core.jobs_metrics import count_job_run
from syncwarden.core.logging import get_logger
from syncwarden.core.planner_statistics import refresh_planner_statistics
from syncwarden.core.settings import Settings
from syncwarden.core.tracing import tracer
from syncwarden.job_runs import last_run, record_run
from syncwarden.sync.engine import SyncReport
from syncwarden.workflow_wiring import Workflows
from syncwarden.workflows.outbox_dispatch import OutboxDispatcher

log = get_logger(__name__)
# On stop, scheduled runs under way get this long before they are interrupted.
JOB_STOP_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class Job:
    id: str
    every_minutes: float
    run: Callable[[], Awaitable[object]]
    run_at_start: bool = False
    jitter_seconds: float | None = None
    # Wait this long before the first run (e.g. until the HTTP endpoint is listening).
    first_run_after_seconds: float | None = None
    # Runs on one replica at a time (a database lock); jobs sharing work through row leases
    # (the sync runs) do not need it.
    singleton: bool = True
    # Calendar-bound: fires on this cron schedule in SCHEDULER__TIMEZONE instead of every
    # ``every_minutes``, and its last run is kept in the database (see syncwarden/job_runs.py).
    cron: Mapping[str, int | str] | None = None


def declared_jobs(
    settings: Settings, workflows: Workflows, engine: AsyncEngine | None = None
) -> list[Job]:
    """Every scheduled job; ``engine``, the service's database, for its own upkeep."""
    scim = (
        # Unassignments Entra ID sent while the person had a ticket open, carried out once it
        # is done (Entra ID sends each change once).
        [
            Job(
                "scim.catch_up",
                settings.access.check_minutes,
                workflows.unassigned_catch_up.run,
            )
        ]
        if settings.scim.enabled
        else []
    )
    return [
        *scim,
        Job(
            "approvals.check_pending",
            settings.scheduler.approval_check_minutes,
            workflows.service.check_pending,
        ),
        # Time-bound access: reminders before the end, a removal ticket at the end (stamped on
        # the enrollment in the same commit, so a second run or replica does neither twice).
        Job(
            "access.expiry",
            settings.access.check_minutes,
            lambda: _described(workflows.service.check_access_expiry()),
        ),
        # Access reviews: start one when due, remind and ask the fallback reviewers, close it
        # (undecided people follow the default), open removals still owed.
        Job(
            "access.reviews",
            settings.access.check_minutes,
            workflows.service.reviews.run_due,
        ),
        Job(
            "credentials.scan",
            settings.scheduler.credential_scan_hours * 60,
            workflows.credentials.scan,
            run_at_start=True,
        ),
        Job(
            "access.reconcile",
            24 * 60,
            lambda: _described(workflows.reconciler.run()),
            cron=DAILY_RECONCILIATION,
        ),
        Job(
            "credentials.weekly_digest",
            7 * 24 * 60,
            workflows.credentials.digest,
            cron=WEEKLY_DIGEST,
        ),
        Job(
            "sync.run",
            settings.scheduler.sync_interval_minutes,
            lambda: _summarised(workflows.sync.worker.run_all()),
            run_at_start=True,
            jitter_seconds=settings.scheduler.sync_jitter_seconds,
            singleton=False,
        ),
        # New enrollments, "sync now" and change notifications wait at most this long.
        Job(
            "sync.requested",
            REQUESTED_POLL_SECONDS / 60,
            lambda: _summarised(workflows.sync.worker.run_requested()),
            jitter_seconds=0,
            singleton=False,
        ),
        Job(
            "sync.failure_digest",
            settings.sync.failure_digest_minutes,
            workflows.sync.alerts.digest,
        ),
        # Graph validates the notification URL when a subscription is created, so the first
        # pass waits for the HTTP server to listen.
        Job(
            "sync.subscriptions",
            60,
            lambda: _described(workflows.sync.subscriptions.maintain()),
            first_run_after_seconds=15,
        ),
        *_database_upkeep(engine),
    ]


def _database_upkeep(engine: AsyncEngine | None) -> list[Job]:
    """SQLite's planner statistics, refreshed daily as the tables grow (the service refreshes
    them at start too); PostgreSQL's autovacuum keeps its own."""
    if engine is None or engine.dialect.name != "sqlite":
        return []
    return [Job("database.statistics", 24 * 60, lambda: refresh_planner_statistics(engine))]


async def _described(result: Awaitable[object]) -> str:
    return str(await result)


REQUESTED_POLL_SECONDS = 10.0
# Early every morning in the scheduler's time zone, before IT's day: drift found overnight
# (leavers disabled in the evening, members added by hand) is in the channel when they arrive.
DAILY_RECONCILIATION: Mapping[str, int | str] = {"hour": 6, "minute": 30}
# Monday morning in the scheduler's time zone, when IT plans its week.
WEEKLY_DIGEST: Mapping[str, int | str] = {"day_of_week": "mon", "hour": 8, "minute": 0}


async def _summarised(reports: Awaitable[list[SyncReport]]) -> str | None:
    """A job result short enough for one log line; None (nothing logged) when nobody was due."""
    done = await reports
    if not done:
        return None
    failed = sum(1 for report in done if not report.ok)
    writes = sum(report.writes for report in done)
    return f"{len(done)} people synced, {failed} failed, {writes} calendar writes"


class BackgroundWork:
    def __init__(
        self,
        settings: Settings,
        workflows: Workflows,
        dispatcher: OutboxDispatcher | None = None,
        *,
        engine: AsyncEngine | None = None,
    ) -> None:
        self._settings = settings
        self._workflows = workflows
        self._dispatcher = dispatcher
        self._engine = engine
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._running_jobs: set[asyncio.Task[Any]] = set()
        self._scheduler = AsyncIOScheduler(timezone=settings.scheduler.timezone)

    async def start(self) -> None:
        self._tasks.append(
            asyncio.create_task(
                self._workflows.runner.run_forever(self._stop), name="provisioning-runner"
            )
        )
        if self._dispatcher is not None:
            self._tasks.append(
                asyncio.create_task(
                    self._dispatcher.run_forever(self._stop), name="outbox-dispatcher"
                )
            )
        for job in declared_jobs(self._settings, self._workflows, self._engine):
            if job.cron is not None:
                trigger = CronTrigger(timezone=self._settings.scheduler.timezone, **job.cron)
                overdue = await self._missed(job, trigger)
                self._scheduler.add_job(
                    logged_job(
                        job,
                        self._engine,
                        timezone=self._settings.scheduler.timezone,
                        running=self._running_jobs,
                    ),
                    trigger,
                    id=job.id,
                    name=job.id,
                    coalesce=True,
                    max_instances=1,
                    **({"next_run_time": datetime.now(UTC)} if overdue else {}),
                )
                continue
            self._scheduler.add_job(
                logged_job(job, self._engine, running=self._running_jobs),
                "interval",
                minutes=job.every_minutes,
                id=job.id,
                name=job.id,
                coalesce=True,
                max_instances=1,
                jitter=job.jitter_seconds
                if job.jitter_seconds is not None
                else min(30, int(job.every_minutes * 6)),
                **_first_run(job),
            )
        self._scheduler.start()
        log.info(
            "background.started",
            jobs=[job.id for job in declared_jobs(self._settings, self._workflows, self._engine)],
        )

    async def _missed(self, job: Job, trigger: CronTrigger) -> bool:
        """Whether the job's most recent due time passed with no run recorded since."""
        if self._engine is None:
            return False
        due = last_due(trigger, datetime.now(UTC))
        ran = await last_run(self._engine, job.id)
        return due is not None and (ran is None or ran < due)

    def next_run(self, job_id: str) -> datetime | None:
        """When the scheduler will next run ``job_id`` (None when it is not scheduled)."""
        job = self._scheduler.get_job(job_id)
        return job.next_run_time if job is not None else None

    def kick(self, job_id: str) -> None:
        """Run a job now instead of at its next trigger (it still never runs twice at once)."""
        if self._scheduler.running:
            self._scheduler.modify_job(job_id, next_run_time=datetime.now(UTC))

    async def stop(self) -> None:
        """Stop taking work; give scheduled runs under way a few seconds, then interrupt them.

        Every job is resumable (a sync run's people are leased, a step is claimed), so an
        interrupted run is finished by the next one, here or on another process.
        """
        self._stop.set()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        if self._running_jobs:
            _, unfinished = await asyncio.wait(
                set(self._running_jobs), timeout=JOB_STOP_GRACE_SECONDS
            )
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, timeout=30)


def _first_run(job: Job) -> dict[str, datetime]:
    if job.first_run_after_seconds is not None:
        return {"next_run_time": datetime.now(UTC) + timedelta(seconds=job.first_run_after_seconds)}
    return {"next_run_time": datetime.now(UTC)} if job.run_at_start else {}


def logged_job(
    job: Job,
    engine: AsyncEngine | None,
    *,
    timezone: str = "UTC",
    running: set[asyncio.Task[Any]] | None = None,
) -> Callable[[], Awaitable[None]]:
    """The job as the scheduler runs it: on one replica if it is a singleton, its outcome logged,
    an unexpected failure logged with its traceback and counted.

    While it runs, its task is in ``running`` (so a stopping process can wait for it or
    interrupt it). An interruption is an expected part of stopping, logged as such: left to the
    scheduler it would be reported as the job failing, with a traceback.

    A calendar-bound job also runs once per due time across replicas: the lock only keeps two
    runs apart, so a replica whose trigger fires after another replica's run has finished (both
    found it overdue at start, or their clocks differ by more than the run takes) would repeat
    it. Under the lock, a run already on record since the latest due time is a skip.
    """
    trigger = CronTrigger(timezone=timezone, **job.cron) if job.cron is not None else None

    async def run() -> None:
        task = asyncio.current_task()
        if running is not None and task is not None:
            running.add(task)
        try:
            async with singleton_lock(engine if job.singleton else None, job.id) as held:
                if not held:
                    log.info("job.skipped", job=job.id, reason="running on another replica")
                    return
                if (
                    trigger is not None
                    and engine is not None
                    and await _ran_since_due(engine, job.id, trigger)
                ):
                    log.info("job.skipped", job=job.id, reason="already ran for this due time")
                    return
                with tracer.start_as_current_span(f"job {job.id}", attributes={"job": job.id}):
                    result = await job.run()
                if trigger is not None and engine is not None:
                    await record_run(engine, job.id, datetime.now(UTC))
            count_job_run(job.id, failed=False)
            if result is not None:
                log.info("job.done", job=job.id, result=result)
        except asyncio.CancelledError:
            log.info("job.interrupted", job=job.id, reason="the process is stopping")
        except Exception as error:  # a failed run is retried at the next trigger
            count_job_run(job.id, failed=True)
            report_unexpected(log, "job.failed", error, where="job", job=job.id)
        finally:
            if running is not None and task is not None:
                running.discard(task)

    return run


async def _ran_since_due(engine: AsyncEngine, job_id: str, trigger: CronTrigger) -> bool:
    """Whether a run of ``job_id`` is on record at or after the trigger's latest due time."""
    due = last_due(trigger, datetime.now(UTC))
    ran = await last_run(engine, job_id)
    return due is not None and ran is not None and ran >= due


def last_due(trigger: CronTrigger, now: datetime) -> datetime | None:
    """The trigger's latest fire time at or before ``now`` (within the last 35 days)."""
    fire = trigger.get_next_fire_time(None, now - timedelta(days=35))
    latest = None
    while fire is not None and fire <= now:
        latest = fire
        fire = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
    return latest


@asynccontextmanager
async def singleton_lock(engine: AsyncEngine | None, name: str) -> AsyncIterator[bool]:
    """Whether this replica holds ``name``'s lock for the block (False: another one does).

    On PostgreSQL a session advisory lock, tried without waiting, so a replica whose turn it is
    not skips the run instead of queueing behind it. SQLite serves one host, where the
    scheduler's ``max_instances=1`` already keeps a job single; there is nothing to lock.
    """
    if engine is None or engine.dialect.name != "postgresql":
        yield True
        return
    key = int.from_bytes(
        hashlib.sha256(f"syncwarden-job:{name}".encode()).digest()[:8], "big", signed=True
    )
    async with engine.connect() as connection:
        held = bool(
            await connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key})
        )
        await connection.commit()
        try:
            yield held
        finally:
            if held:
                await connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                await connection.commit()
