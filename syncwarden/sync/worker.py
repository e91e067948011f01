"""Who syncs whom, and when: row leases over enrollments, shared by any number of processes.

A run claims enrollments by writing a lease (owner and expiry) on their sync state in a short
transaction, committed before any outside call. On PostgreSQL the claim skips rows another
process has locked (``FOR UPDATE SKIP LOCKED``), so workers split the list instead of queueing on
it; on SQLite the write lock serialises claims. A worker that dies leaves leases that simply run
out. Nothing about pending work lives only in memory: "sync now", a new enrollment or a change
notification is a ``requested_at`` stamp in the database.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from syncwarden.core.db import utc_now, write_transaction
from syncwarden.core.failures import report_unexpected
from syncwarden.core.jobs_metrics import count_sync_run
from syncwarden.core.logging import get_logger
from syncwarden.core.settings import SyncSettings
from syncwarden.core.tasks import running_alongside
from syncwarden.sync.engine import SyncEngine, SyncOptions, SyncReport
from syncwarden.sync.errors import FailureKind
from syncwarden.sync.quiet import QuietWrites
from syncwarden.sync.records import SyncState
from syncwarden.sync.snapshot import Prepared
from syncwarden.workflows.model import TicketStatus
from syncwarden.workflows.records import Enrollment, Ticket, canonical_object_id

log = get_logger(__name__)
CLAIM_BATCH = 50
# Quiet runs written per transaction (and the rest when a claimed batch is done): a lease is
# given back at most this many quiet people later than its own run ended.
QUIET_WRITE_EVERY = 16


def run_outcome(report: SyncReport) -> tuple[str, str | None]:
    """How ``/metrics`` counts one person's run: ``ok``, ``skipped`` (not run, or not committed
    because another worker took the person over), or ``failed`` with its kind (a run that
    crashed has none of its own and counts as ``other``, the kind of an unexpected failure)."""
    if report.skipped is not None:
        return "skipped", None
    if report.ok:
        return "ok", None
    return "failed", (report.error_kind or FailureKind.OTHER).value


class SyncWorker:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        engine: SyncEngine,
        settings: SyncSettings,
        *,
        owner: str | None = None,
        min_gap: timedelta = timedelta(minutes=1),
        on_report: Callable[[SyncReport], Awaitable[None]] | None = None,
        clock: Callable[[], datetime] = utc_now,
        renew_every: float | None = None,
        on_lease_renewed: Callable[[int, datetime], None] | None = None,
    ) -> None:
        """``min_gap``: a periodic run skips anyone whose last run started less than this ago,
        so workers that fire at slightly different moments do not sync the same people twice.

        A run's lease is renewed every ``renew_every`` seconds (a third of the lease by default)
        while it lasts, so a slow mailbox is not taken over by another worker mid-run."""
        self._renew_every = renew_every or settings.lease_seconds / 3
        self._on_lease_renewed = on_lease_renewed
        self._sessions = sessions
        self._min_gap = min_gap
        self._on_report = on_report
        self._progress: list[Callable[[], None]] = []
        self._engine = engine
        self._settings = settings
        self.owner = owner or f"sync-{uuid.uuid4().hex[:12]}"
        self._clock = clock

    def add_progress(self, tick: Callable[[], None]) -> None:
        """Call ``tick`` after each person's run (a progress bar)."""
        self._progress.append(tick)

    async def run_all(self, options: SyncOptions | None = None) -> list[SyncReport]:
        """The periodic run: every active, unpaused enrollment not leased by someone else."""
        return await self._run(requested_only=False, options=options)

    async def run_requested(self, options: SyncOptions | None = None) -> list[SyncReport]:
        """Only enrollments someone asked for: new ones, "sync now", change notifications."""
        await self._promote_new_enrollments()
        return await self._run(requested_only=True, options=options)

    async def request(self, enrollment_ids: Sequence[int] | None = None) -> int:
        """Stamp enrollments (all active ones when None) for the next requested run."""
        now = self._clock()
        async with write_transaction(self._sessions) as session:
            query = select(Enrollment.id).where(Enrollment.active.is_(True))
            if enrollment_ids is not None:
                query = query.where(Enrollment.id.in_(list(enrollment_ids)))
            ids = list((await session.scalars(query)).all())
            await self._ensure_states(session, ids)
            if ids:
                await session.execute(
                    update(SyncState)
                    .where(SyncState.enrollment_id.in_(ids))
                    .values(requested_at=now)
                )
            return len(ids)

    async def request_person(self, who: str) -> int:
        """Request the active enrollments of one person, named by object id, UPN or mailbox."""
        cleaned = who.strip().lower()
        async with self._sessions() as session:
            ids = (
                await session.scalars(
                    select(Enrollment.id).where(
                        Enrollment.active.is_(True),
                        or_(
                            Enrollment.subject_id == cleaned,
                            func.lower(Enrollment.subject_upn) == cleaned,
                            func.lower(Enrollment.mailbox) == cleaned,
                        ),
                    )
                )
            ).all()
        return await self.request(list(ids)) if ids else 0

    async def request_mailbox(self, mailbox_id: str) -> int:
        """A change notification for a mailbox: request its active enrollments."""
        async with self._sessions() as session:
            ids = (
                await session.scalars(
                    select(Enrollment.id).where(
                        Enrollment.subject_id == canonical_object_id(mailbox_id),
                        Enrollment.active.is_(True),
                    )
                )
            ).all()
        return await self.request(list(ids)) if ids else 0

    # -- claiming --------------------------------------------------------------------------

    async def _run(self, *, requested_only: bool, options: SyncOptions | None) -> list[SyncReport]:
        reports: list[SyncReport] = []
        while True:
            claimed = await self._claim(requested_only=requested_only)
            if not claimed:
                return reports
            reports.extend(await self._sync_claimed(claimed, options))

    async def _sync_claimed(
        self, claimed: list[int], options: SyncOptions | None
    ) -> list[SyncReport]:
        gate = asyncio.Semaphore(self._settings.concurrency)
        # Quiet runs' writes, a transaction per group of people (see sync.quiet).
        quiet = QuietWrites(self._sessions, self.owner)
        # The batch's snapshots and source markers in two statements, not two per person.
        prepared = await self._prepare(claimed)

        async def one(enrollment_id: int) -> SyncReport:
            report = await run(enrollment_id)
            if len(quiet) >= QUIET_WRITE_EVERY:
                await self._write_quiet(quiet)
            return report

        async def run(enrollment_id: int) -> SyncReport:
            async with gate:
                try:
                    async with self._lease_kept(enrollment_id):
                        report = await self._engine.sync(
                            enrollment_id,
                            options,
                            lease_owner=self.owner,
                            quiet=quiet,
                            prepared=prepared,
                        )
                except Exception as error:  # one person's failure must not stop the others
                    report_unexpected(
                        log, "sync.run_crashed", error, where="sync.run", enrollment=enrollment_id
                    )
                    report = SyncReport(
                        enrollment_id, "?", ok=False, error=f"{type(error).__name__}: {error}"
                    )
                outcome, kind = run_outcome(report)
                count_sync_run(outcome, failure_kind=kind)
                try:
                    if not report.lease_released:  # a committed run gave it back already
                        await self._release(enrollment_id)
                except Exception as error:  # the lease runs out by itself
                    report_unexpected(
                        log,
                        "sync.release_failed",
                        error,
                        where="sync.release",
                        enrollment=enrollment_id,
                    )
                for tick in self._progress:
                    tick()
                if self._on_report is not None:
                    try:
                        await self._on_report(report)
                    except Exception as error:  # an alert failing must not fail the sync
                        report_unexpected(
                            log, "sync.report_hook_failed", error, where="sync.report_hook"
                        )
                return report

        reports = list(await asyncio.gather(*(one(i) for i in claimed)))
        await self._write_quiet(quiet)
        return reports

    async def _write_quiet(self, quiet: QuietWrites) -> None:
        try:
            await quiet.write()
        except Exception as error:  # the leases run out by themselves; the old links still work
            report_unexpected(log, "sync.quiet_write_failed", error, where="sync.quiet")

    async def _prepare(self, claimed: list[int]) -> Prepared | None:
        try:
            return await self._engine.prepare(claimed)
        except Exception as error:  # each run reads its own then, as without a batch
            report_unexpected(log, "sync.prepare_failed", error, where="sync.prepare")
            return None

    async def _claim(self, *, requested_only: bool) -> list[int]:
        now = self._clock()
        async with write_transaction(self._sessions) as session:
            if not requested_only:
                await _add_missing_states(session)
            free = or_(SyncState.lease_expires_at.is_(None), SyncState.lease_expires_at < now)
            due = (
                SyncState.requested_at.is_not(None)
                if requested_only
                else or_(
                    SyncState.last_run_started_at.is_(None),
                    SyncState.last_run_started_at < now - self._min_gap,
                )
            )
            query = (
                select(SyncState.enrollment_id)
                .join(Enrollment, Enrollment.id == SyncState.enrollment_id)
                .outerjoin(Ticket, Ticket.id == Enrollment.created_by_ticket)
                .where(
                    and_(
                        Enrollment.active.is_(True),
                        Enrollment.paused.is_(False),
                        _provisioned(),
                        free,
                        due,
                    )
                )
                .order_by(SyncState.requested_at.desc(), SyncState.enrollment_id)
                .limit(CLAIM_BATCH)
                .with_for_update(skip_locked=True, of=SyncState)
            )
            claimed = list((await session.scalars(query)).all())
            if claimed:  # the rows are locked (PostgreSQL) or the database is (SQLite)
                await session.execute(
                    update(SyncState)
                    .where(SyncState.enrollment_id.in_(claimed))
                    .values(
                        lease_owner=self.owner,
                        lease_expires_at=now + timedelta(seconds=self._settings.lease_seconds),
                        last_run_started_at=now,
                        requested_at=None,
                    )
                )
            return claimed

    @asynccontextmanager
    async def _lease_kept(self, enrollment_id: int) -> AsyncIterator[None]:
        """Renew the lease on a timer while the block runs; stop renewing once it is over."""

        async def keep() -> None:
            while True:
                await asyncio.sleep(self._renew_every)
                until = self._clock() + timedelta(seconds=self._settings.lease_seconds)
                try:
                    async with write_transaction(self._sessions) as session:
                        renewed = await session.execute(
                            update(SyncState)
                            .where(
                                SyncState.enrollment_id == enrollment_id,
                                SyncState.lease_owner == self.owner,
                            )
                            .values(lease_expires_at=until)
                        )
                except Exception as error:  # try again at the next tick; the lease still runs
                    report_unexpected(log, "sync.lease_renewal_failed", error, where="sync.lease")
                    continue
                if not renewed.rowcount:  # type: ignore[attr-defined]
                    return  # taken over: the run will find out at its commit
                if self._on_lease_renewed is not None:
                    self._on_lease_renewed(enrollment_id, until)

        async with running_alongside(keep(), name=f"lease-{enrollment_id}"):
            yield

    async def _release(self, enrollment_id: int) -> None:
        async with write_transaction(self._sessions) as session:
            await session.execute(
                update(SyncState)
                .where(
                    SyncState.enrollment_id == enrollment_id, SyncState.lease_owner == self.owner
                )
                .values(lease_owner=None, lease_expires_at=None)
            )

    async def _promote_new_enrollments(self) -> None:
        """The provisioning runner stamps ``sync_requested_at``; turn it into a request."""
        async with write_transaction(self._sessions) as session:
            enrollments = (
                await session.scalars(
                    select(Enrollment)
                    .where(Enrollment.sync_requested_at.is_not(None), Enrollment.active.is_(True))
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not enrollments:
                return
            await self._ensure_states(session, [e.id for e in enrollments])
            for enrollment in enrollments:
                await session.execute(
                    update(SyncState)
                    .where(SyncState.enrollment_id == enrollment.id)
                    .values(requested_at=enrollment.sync_requested_at)
                )
                enrollment.sync_requested_at = None

    async def _ensure_states(self, session: AsyncSession, enrollment_ids: list[int]) -> None:
        if not enrollment_ids:
            return
        existing = set(
            (
                await session.scalars(
                    select(SyncState.enrollment_id).where(
                        SyncState.enrollment_id.in_(enrollment_ids)
                    )
                )
            ).all()
        )
        missing = [i for i in enrollment_ids if i not in existing]
        if not missing:
            return
        rows = [{"enrollment_id": i, "consecutive_failures": 0} for i in missing]
        if session.get_bind().dialect.name == "postgresql":
            await session.execute(
                postgresql.insert(SyncState).values(rows).on_conflict_do_nothing()
            )
        else:
            await session.execute(sqlite.insert(SyncState).values(rows).on_conflict_do_nothing())


async def _add_missing_states(session: AsyncSession) -> None:
    """A sync state row for every active enrollment without one, in one statement.

    Run before every claim: reading every active id to compare them here cost each batch of
    a pass a read of the whole enrollment table.
    """
    missing = select(Enrollment.id, literal(0)).where(
        Enrollment.active.is_(True),
        ~select(SyncState.enrollment_id).where(SyncState.enrollment_id == Enrollment.id).exists(),
    )
    columns = ["enrollment_id", "consecutive_failures"]
    if session.get_bind().dialect.name == "postgresql":
        statement: Any = postgresql.insert(SyncState).from_select(columns, missing)
    else:
        statement = sqlite.insert(SyncState).from_select(columns, missing)
    await session.execute(statement.on_conflict_do_nothing())


def _provisioned() -> ColumnElement[bool]:
    """An enrollment whose ticket has finished provisioning it (or that no ticket made).

    The enrollment row is written when the profile is mapped, before the person is added to the
    sync group; Exchange refuses their mailbox until then, so syncing it earlier only raises a
    false "not in the sync group" alert. A request made meanwhile waits for the ticket.
    """
    return or_(
        Enrollment.created_by_ticket.is_(None), Ticket.status == TicketStatus.COMPLETED.value
    )
