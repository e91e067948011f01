"""One sync run for one person: read the source, pull Outlook's changes, write only the difference.

Order within a run, and why:

1. One ``calendarView/delta`` round for the mailbox: from the stored link, or a full round
   when there is none, it expired, or its window is a day old. It tells us which pushed events
   were edited or deleted in Outlook and what the person's own events are (busy time). The
   round's window is *the* window of the run: Graph reports anything that changes outside it
   as ``@removed``, so writing outside it would read back as a deletion next time.
2. Read the source for that window. A failed read changes nothing; an empty read where there
   used to be appointments is not believed (safety valve) rather than turned into deletions.
3. Plan against our event links. A pushed event that looks gone (``@removed``, or missing from
   a full round) is read first: if it only moved away, it is written back, never duplicated.
   A plan that would delete more than the allowed share stops and alerts IT instead.
4. Write in ``$batch`` calls. Creates carry a ``transactionId`` derived from the enrollment, the
   appointment and its re-creation count, so a run cut off after a write and repeated cannot make
   a duplicate: whichever way Graph answers the repeat (the existing event, or an
   ``ErrorDuplicateTransactionId`` with or without its id), the existing event is adopted and
   brought to the wanted content. Updates and deletes are idempotent by nature.
5. Commit links, busy blocks, counts and the new delta link together, only after the writes.
   A crash before this commit repeats the round from the old link: harmless, by step 4.

A quiet person costs one delta round and one source read: when the round saw nothing and the
source read hashes to the fingerprint the last fully carried-out run stored (with the window,
the mapping and the payload shape; see :func:`sync.plan.source_fingerprint`), the plan would be
empty, so links and busy blocks are not loaded and only the new delta link and the run's stamps
are written. A source that keeps change markers (:class:`connectors.scheduling.ports.
ChangeMarkers`, the built-in table does) is not even read then: the marker it gave before the
settled run's read is stored with the fingerprint (:func:`sync.plan.source_marker`), and the
same marker now means the same read. Reading 200 appointments to hash them was most of a quiet
person's CPU. A forced or restarted (full) round, an error or anything left over on the last
run (a failed or deferred write, an event to put right) clears or bypasses the fingerprint.
A run cut off after Outlook writes cannot pass for quiet: its writes show in the next round.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import InstrumentedAttribute

from syncwarden.connectors.errors import (
    AccessDeniedError,
    ConnectorError,
    DeltaExpiredError,
    DuplicateTransactionError,
)
from syncwarden.connectors.graph.calendar import (
    GraphCalendar,
    create_request,
    delete_request,
    update_request,
)
from syncwarden.connectors.graph.client import BatchRequest, BatchResult, DeltaResult
from syncwarden.connectors.scheduling.ports import (
    Appointment,
    AppointmentSource,
    ChangeMarkers,
    Window,
)
from syncwarden.core.db import upsert_rows, utc_now, write_transaction
from syncwarden.core.logging import get_logger
from syncwarden.core.settings import SyncSettings
from syncwarden.sync.adoption import Adoption, adopt, same_content
from syncwarden.sync.errors import FailureKind, LeaseLostError, SafetyValveError, classify, describe
from syncwarden.sync.outlook_read import OutlookRead, read_delta
from syncwarden.sync.plan import (
    MISSING,
    REMOVED,
    Desired,
    LinkView,
    Plan,
    deletion_share,
    desired_events,
    plan_changes,
    source_fingerprint,
    source_marker,
)
from syncwarden.sync.quiet import QuietRun, QuietWrites
from syncwarden.sync.records import BusyBlockRecord, EventLink, SyncState
from syncwarden.sync.snapshot import Prepared, Snapshot, load_snapshots
from syncwarden.workflows.records import Enrollment

log = get_logger(__name__)
Clock = Callable[[], datetime]


@dataclass(frozen=True)
class SyncOptions:
    allow_deletions: bool = False
    full: bool = False


@dataclass
class SyncReport:
    enrollment_id: int
    person: str
    ok: bool = True
    skipped: str | None = None
    created: int = 0
    updated: int = 0
    deleted: int = 0
    recreated: int = 0
    overwritten: int = 0
    deferred: int = 0
    adopted: int = 0
    failed_writes: int = 0
    busy_blocks: int = 0
    requests: int = 0
    full_resync: bool = False
    recovered: bool = False
    # The kind of failure a recovered run ended (the enrollment's last error kind before it).
    recovered_from: FailureKind | None = None
    error: str | None = None
    error_kind: FailureKind | None = None
    # The run's commit released the worker's lease, or the quiet write it was left to will:
    # the worker need not release it.
    lease_released: bool = False

    @property
    def writes(self) -> int:
        return self.created + self.updated + self.deleted + self.recreated


@dataclass(frozen=True)
class _Round:
    """One delta round as Graph answered it, before anything is read into it."""

    result: DeltaResult
    full: bool
    window: Window


@dataclass
class _Written:
    """What the writes achieved, to be committed."""

    # By source id: the link as it now stands, or None where the event was deleted.
    links: dict[str, LinkView | None]
    missing: set[str]
    # Changed by someone else between our write and the catch-up round: rewrite next run.
    stale: set[str] = field(default_factory=set)
    # Reported under ``@removed`` by the catch-up round: read before re-creating next run.
    removed: set[str] = field(default_factory=set)


# A create whose transaction id belongs to a deleted event moves to the next generation's id;
# this many tries per run, then the rest waits for the next run.
_GENERATIONS_PER_RUN = 3


@dataclass(frozen=True)
class _Action:
    """What one write in a batch is for, and the generation its create's transaction id has."""

    kind: str
    desired: Desired | None
    link: LinkView | None
    generation: int


class SyncEngine:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        calendar: GraphCalendar,
        source: AppointmentSource,
        settings: SyncSettings,
        *,
        clock: Clock = utc_now,
    ) -> None:
        self._sessions = sessions
        self._calendar = calendar
        self._source = source
        self._markers = source if isinstance(source, ChangeMarkers) else None
        self._settings = settings
        self._clock = clock

    async def sync(
        self,
        enrollment_id: int,
        options: SyncOptions | None = None,
        *,
        lease_owner: str | None = None,
        quiet: QuietWrites | None = None,
        prepared: Prepared | None = None,
    ) -> SyncReport:
        """One run for one person; with ``lease_owner``, it commits only while that lease holds.

        A worker that lost its lease (it ran past the expiry and another took the person over)
        must not write its links over the other's: its Outlook writes carry transaction ids, so
        whoever commits next adopts them instead of duplicating them. The run's commit gives the
        lease back in the same transaction (``report.lease_released``), which saves the worker a
        transaction of its own per person. With ``quiet`` (the worker's, under the same lease),
        a run with nothing to do leaves its writes there, to be written with others'. With
        ``prepared`` (:meth:`prepare`, for the worker's batch), the person's snapshot and
        source marker are taken from there rather than read again.
        """
        options = options or SyncOptions()
        snapshot = prepared.take(enrollment_id) if prepared is not None else None
        if snapshot is None:
            snapshot = await self._load(enrollment_id)
        if snapshot is None:
            return SyncReport(enrollment_id, "?", ok=False, skipped="no such enrollment")
        report = SyncReport(enrollment_id, snapshot.person)
        if not snapshot.active or snapshot.paused:
            report.skipped = "paused" if snapshot.paused else "not active"
            return report
        started = self._clock()
        try:
            await self._run(
                snapshot,
                options,
                report,
                started,
                (lease_owner, quiet),
                prepared.markers if prepared is not None else {},
            )
        except LeaseLostError:
            report.ok = False
            report.skipped = "another worker took this person over; nothing was committed"
            log.warning("sync.lease_lost", enrollment=enrollment_id, owner=lease_owner)
        except (ConnectorError, SafetyValveError) as error:
            report.ok = False
            report.error = describe(error)
            report.error_kind = classify(error)
            await self._record_failure(snapshot, report)
        log.info(
            "sync.run",
            enrollment=enrollment_id,
            ok=report.ok,
            created=report.created,
            updated=report.updated,
            deleted=report.deleted,
            recreated=report.recreated,
            busy=report.busy_blocks,
            adopted=report.adopted,
            requests=report.requests,
            full=report.full_resync,
            error_kind=report.error_kind.value if report.error_kind else None,
        )
        return report

    # -- the run ---------------------------------------------------------------------------

    async def _run(
        self,
        snapshot: Snapshot,
        options: SyncOptions,
        report: SyncReport,
        started: datetime,
        lease: tuple[str | None, QuietWrites | None],
        markers: Mapping[str, str],
    ) -> None:
        lease_owner = lease[0]
        round_ = await self._pull(snapshot, options, started, report)
        window = round_.window
        # Read before the appointments, so that it vouches for no later state than theirs.
        marker = await self._marker(snapshot, window, markers)
        quiet_round = _quiet_round(snapshot, options, round_)
        if quiet_round and marker is not None and marker == snapshot.marker:
            await self._quiet(snapshot, round_, report, lease, marker)
            return
        appointments = await self._source.list_appointments(snapshot.profile_id, window)
        self._check_empty_read(appointments, snapshot, options)
        fingerprint = source_fingerprint(
            appointments,
            window,
            subject_template=self._settings.subject_template,
            profile_id=snapshot.profile_id,
            mailbox=snapshot.mailbox,
        )
        if quiet_round and snapshot.fingerprint == fingerprint:
            await self._quiet(snapshot, round_, report, lease, marker)
            return
        snapshot = replace(snapshot, links=await self._links(snapshot.enrollment_id))
        linked = {link.event_id for link in snapshot.links}
        outlook = read_delta(round_.result.items, linked, full=round_.full, window=window)
        wanted = desired_events(appointments, window, self._settings.subject_template)
        plan = plan_changes(wanted, snapshot.links, outlook.view, window)
        await self._confirm_gone(snapshot, plan, window, report)
        self._check_deletions(plan, snapshot, options)
        plan.cap_creations(self._settings.max_creations_per_run)
        written = await self._write(snapshot, plan, report)
        delta_link = round_.result.delta_link
        next_link: str | None = delta_link
        if report.writes:
            outlook, next_link = await self._catch_up(
                snapshot, written, outlook, delta_link, report
            )
        # Only a run that left Outlook as planned vouches for its inputs; anything left for
        # the next run (a failed or deferred write, an event to put right, no link to resume
        # from) must not let that run pass for quiet.
        settled = (
            next_link is not None
            and report.failed_writes == 0
            and not plan.deferred
            and not (written.missing or written.removed or written.stale)
        )
        await self._commit(
            snapshot,
            plan,
            written,
            outlook,
            (next_link, round_.full),
            report,
            (started, lease_owner),
            (len(wanted), fingerprint if settled else None, marker if settled else None),
        )

    async def prepare(self, enrollment_ids: Collection[int]) -> Prepared:
        """What the runs of a batch need before they start, in two statements for all of them:
        their snapshots and the source's change markers (see :mod:`sync.snapshot`).

        A source that cannot give its markers now is left to each run, which reports it.
        """
        snapshots = await load_snapshots(self._sessions, enrollment_ids)
        markers: dict[str, str] = {}
        profiles = {snapshot.profile_id for snapshot in snapshots.values()}
        if self._markers is not None and profiles:
            try:
                markers = await self._markers.change_markers(profiles)
            except ConnectorError:
                markers = {}
        return Prepared(snapshots, markers)

    async def _marker(
        self, snapshot: Snapshot, window: Window, markers: Mapping[str, str]
    ) -> str | None:
        """The source's change marker for the person, with the run's inputs; None without one.

        One read before the run (``markers``) will do, for the profile it was read for.
        """
        if self._markers is None:
            return None
        token = markers.get(snapshot.profile_id)
        if token is None:
            found = await self._markers.change_markers([snapshot.profile_id])
            token = found[snapshot.profile_id]
        return source_marker(
            token,
            window,
            subject_template=self._settings.subject_template,
            profile_id=snapshot.profile_id,
            mailbox=snapshot.mailbox,
        )

    async def _quiet(
        self,
        snapshot: Snapshot,
        round_: _Round,
        report: SyncReport,
        lease: tuple[str | None, QuietWrites | None],
        marker: str | None,
    ) -> None:
        """Nothing to do: leave the round's link, the marker and the stamps to be written."""
        lease_owner, quiet = lease
        report.busy_blocks = snapshot.busy_blocks
        if quiet is not None and lease_owner is not None:
            quiet.add(
                QuietRun(
                    snapshot.enrollment_id,
                    round_.result.delta_link,
                    report.requests,
                    _summary(report),
                    self._clock(),
                    marker,
                )
            )
            report.lease_released = True  # by the quiet write, with the others'
        else:
            await self._commit_quiet(
                snapshot, (round_.result.delta_link, marker), report, lease_owner
            )

    def _check_empty_read(
        self, appointments: Sequence[Appointment], snapshot: Snapshot, options: SyncOptions
    ) -> None:
        if (
            not appointments
            and snapshot.source_count >= self._settings.empty_read_minimum
            and not options.allow_deletions
        ):
            raise SafetyValveError(
                f"the scheduling system returned no appointments for {snapshot.person}, where it "
                f"returned {snapshot.source_count} before; nothing was deleted"
            )

    async def _pull(
        self, snapshot: Snapshot, options: SyncOptions, started: datetime, report: SyncReport
    ) -> _Round:
        """One delta round; the window of the read is the window of the whole run.

        A stored round keeps its window until it is restarted: the clock moves on, the round's
        window does not, and Graph reports anything that changes outside it as removed.
        """
        stale = snapshot.delta_started_at is None or (
            self._clock() - snapshot.delta_started_at
            > timedelta(hours=self._settings.delta_restart_hours)
        )
        stored = snapshot.delta_window
        if snapshot.delta_link and stored is not None and not options.full and not stale:
            try:
                result = await self._calendar.delta(
                    snapshot.mailbox, delta_link=snapshot.delta_link
                )
                report.requests += result.requests
                return _Round(result, False, stored)
            except DeltaExpiredError:
                log.info("sync.delta_expired", enrollment=snapshot.enrollment_id)
        window = Window(
            started - timedelta(days=self._settings.days_back),
            started + timedelta(days=self._settings.days_ahead),
        )
        result = await self._calendar.delta(snapshot.mailbox, start=window.start, end=window.end)
        report.requests += result.requests
        report.full_resync = True
        return _Round(result, True, window)

    async def _confirm_gone(
        self, snapshot: Snapshot, plan: Plan, window: Window, report: SyncReport
    ) -> None:
        """Read the pushed events delta only suspects are gone, before anything is re-created."""
        suspects = plan.unconfirmed(window)
        if not suspects:
            return
        event_ids = [link.event_id for link in suspects]
        still_there = await self._calendar.existing(snapshot.mailbox, event_ids)
        report.requests += -(-len(event_ids) // 20)
        if still_there:
            log.info(
                "sync.moved_not_deleted",
                enrollment=snapshot.enrollment_id,
                events=len(still_there),
            )
        plan.confirm(set(still_there))

    async def _catch_up(
        self,
        snapshot: Snapshot,
        written: _Written,
        before: OutlookRead,
        delta_link: str,
        report: SyncReport,
    ) -> tuple[OutlookRead, str | None]:
        """One more delta round after our writes, so the stored link starts *after* them.

        Without it, a pushed event deleted in Outlook before the next run would never show up
        as removed (delta reports changes since the link, and the link predates the event).
        Anything else that round shows is folded in: other events into busy time, and a pushed
        event changed or removed by someone in the meantime is marked to be put right next run.
        """
        ours = {link.event_id: sid for sid, link in written.links.items() if link is not None}
        ours.update({link.event_id: link.source_id for link in snapshot.links})
        try:
            result = await self._calendar.delta(snapshot.mailbox, delta_link=delta_link)
        except DeltaExpiredError:
            return before, None
        report.requests += result.requests
        after = read_delta(result.items, set(ours), full=False, window=before.view.window)
        for event_id in after.view.removed:
            source_id = ours[event_id]
            if source_id in written.links and written.links[source_id] is None:
                continue  # our own delete of this run, not someone else's
            written.removed.add(source_id)
        known = {link.source_id: link.change_key for link in snapshot.links}
        known.update({sid: link.change_key for sid, link in written.links.items() if link})
        for event_id, change_key in after.view.change_keys.items():
            source_id = ours[event_id]
            if source_id in known and change_key != known[source_id]:
                written.stale.add(source_id)
        busy = {k: v for k, v in before.busy.items() if k not in after.not_busy}
        busy.update(after.busy)
        not_busy = (before.not_busy | after.not_busy) - set(after.busy)
        return OutlookRead(before.view, busy, not_busy), result.delta_link

    def _check_deletions(self, plan: Plan, snapshot: Snapshot, options: SyncOptions) -> None:
        if options.allow_deletions or len(plan.deletes) < self._settings.deletion_valve_minimum:
            return
        share = deletion_share(plan, snapshot.links)
        if share > self._settings.max_deletion_share:
            raise SafetyValveError(
                f"this run would delete {len(plan.deletes)} of {len(snapshot.links)} pushed "
                f"events ({share:.0%}, more than the allowed "
                f"{self._settings.max_deletion_share:.0%}); nothing was deleted"
            )

    async def _write(self, snapshot: Snapshot, plan: Plan, report: SyncReport) -> _Written:
        requests: list[BatchRequest] = []
        actions: dict[str, _Action] = {}
        mailbox = snapshot.mailbox
        for desired in plan.creates:
            key = f"c{len(requests)}"
            requests.append(self._create(key, snapshot, desired, generation=0))
            actions[key] = _Action("create", desired, None, 0)
        for desired, link in plan.recreates:
            key = f"c{len(requests)}"
            generation = link.generation + 1
            requests.append(self._create(key, snapshot, desired, generation=generation))
            actions[key] = _Action("recreate", desired, link, generation)
        for desired, link in plan.updates:
            key = f"u{len(requests)}"
            requests.append(update_request(key, mailbox, link.event_id, desired.payload))
            actions[key] = _Action("update", desired, link, link.generation)
        for link in plan.deletes:
            key = f"d{len(requests)}"
            requests.append(delete_request(key, mailbox, link.event_id))
            actions[key] = _Action("delete", None, link, link.generation)
        written = _Written({}, set())
        report.overwritten = plan.overwrites
        report.deferred = plan.deferred
        for _ in range(_GENERATIONS_PER_RUN):
            if not requests:
                break
            results = await self._calendar.write_batch(mailbox, requests)
            report.requests += -(-len(requests) // 20)
            adoptions: list[Adoption] = []
            for result in results:
                adoption = self._absorb(snapshot, actions[result.id], result, written, report)
                if adoption is not None:
                    adoptions.append(adoption)
            gone = await self._adopt(snapshot, adoptions, written, report) if adoptions else []
            # The event holding that transaction id was deleted since: create it afresh, under
            # the next generation's id (Graph may keep a spent id after its event is gone).
            requests, actions = [], {}
            for adoption in gone:
                key = f"g{len(requests)}"
                generation = adoption.generation + 1
                desired = adoption.desired
                requests.append(self._create(key, snapshot, desired, generation=generation))
                actions[key] = _Action(adoption.kind, adoption.desired, adoption.link, generation)
        report.failed_writes += len(requests)  # still unplaced after every generation tried
        return written

    def _create(
        self, key: str, snapshot: Snapshot, desired: Desired, *, generation: int
    ) -> BatchRequest:
        return create_request(
            key,
            snapshot.mailbox,
            desired.payload,
            source_id=desired.appointment.id,
            transaction_id=_transaction_id(snapshot.enrollment_id, desired, generation),
        )

    def _absorb(
        self,
        snapshot: Snapshot,
        action: _Action,
        result: BatchResult,
        written: _Written,
        report: SyncReport,
    ) -> Adoption | None:
        """Fold one write's answer into what is committed; a create to adopt is handed back."""
        if isinstance(result.error, AccessDeniedError):
            # The mailbox or the app is refused: every other write would be refused the same way.
            raise result.error
        kind, desired, link = action.kind, action.desired, action.link
        if kind == "delete":
            assert link is not None
            if result.ok or result.status == 404:
                written.links[link.source_id] = None
                report.deleted += 1
            else:
                report.failed_writes += 1
            return None
        assert desired is not None
        transaction_id = _transaction_id(snapshot.enrollment_id, desired, action.generation)
        if isinstance(result.error, DuplicateTransactionError):
            # Created before, by a run that stopped before it could record the link.
            return Adoption(
                kind,
                desired,
                link,
                result.error.existing_event_id,
                transaction_id,
                action.generation,
            )
        body = result.body if isinstance(result.body, dict) else {}
        if result.ok and kind != "update" and not same_content(desired.payload, body):
            # Graph handed back an earlier create with this transactionId, as it was then.
            event_id = str(body.get("id") or "") or None
            return Adoption(kind, desired, link, event_id, transaction_id, action.generation)
        if not result.ok:
            if kind == "update" and result.status == 404 and link is not None:
                # Deleted in Outlook since the delta round: re-created next run, not a failure.
                written.missing.add(link.source_id)
                return None
            report.failed_writes += 1
            log.warning(
                "sync.write_failed",
                enrollment=snapshot.enrollment_id,
                action=kind,
                status=result.status,
                error=str(result.error),
            )
            return None
        self._link(snapshot, action, body, written, report)
        return None

    def _link(
        self,
        snapshot: Snapshot,
        action: _Action,
        body: dict[str, Any],
        written: _Written,
        report: SyncReport,
    ) -> None:
        desired, link = action.desired, action.link
        assert desired is not None
        appointment = desired.appointment
        written.links[appointment.id] = LinkView(
            source_id=appointment.id,
            event_id=str(body.get("id") or (link.event_id if link else "")),
            content_hash=desired.content_hash,
            change_key=body.get("changeKey"),
            generation=action.generation,
            starts_at=appointment.start,
            ends_at=appointment.end,
        )
        if action.kind == "create":
            report.created += 1
        elif action.kind == "recreate":
            report.recreated += 1
        else:
            report.updated += 1

    async def _adopt(
        self,
        snapshot: Snapshot,
        adoptions: list[Adoption],
        written: _Written,
        report: SyncReport,
    ) -> list[Adoption]:
        """Link events an earlier, interrupted run created (see :mod:`sync.adoption`).

        Returns the adoptions whose event no longer exists, to be created afresh.
        """
        round_ = await adopt(self._calendar, snapshot.mailbox, adoptions)
        report.requests += round_.requests
        for adopted in round_.adopted:
            if isinstance(adopted.error, AccessDeniedError):
                raise adopted.error
            if adopted.event is None:
                report.failed_writes += 1
                log.warning(
                    "sync.adopt_failed", enrollment=snapshot.enrollment_id, error=str(adopted.error)
                )
                continue
            report.adopted += 1
            adoption = adopted.adoption
            action = _Action(adoption.kind, adoption.desired, adoption.link, adoption.generation)
            self._link(snapshot, action, adopted.event, written, report)
        if round_.gone:
            log.info(
                "sync.spent_transaction", enrollment=snapshot.enrollment_id, events=len(round_.gone)
            )
        return round_.gone

    async def _commit(
        self,
        snapshot: Snapshot,
        plan: Plan,
        written: _Written,
        outlook: OutlookRead,
        delta: tuple[str | None, bool],
        report: SyncReport,
        run: tuple[datetime, str | None],
        source: tuple[int, str | None, str | None],
    ) -> None:
        now = self._clock()
        delta_link, full = delta
        started, lease_owner = run
        source_count, fingerprint, marker = source
        enrollment_id = snapshot.enrollment_id
        async with write_transaction(self._sessions) as session:
            # The state row first, locked: a lease taken over by another worker stops the commit.
            state = await self._state(session, enrollment_id)
            if lease_owner is not None:
                if state.lease_owner != lease_owner:
                    raise LeaseLostError(enrollment_id)
                state.lease_owner = state.lease_expires_at = None
            gone = [link.source_id for link in plan.forget]
            gone += [source_id for source_id, new in written.links.items() if new is None]
            await _delete_in(
                session, EventLink.source_id, gone, EventLink.enrollment_id == enrollment_id
            )
            await upsert_rows(
                session,
                EventLink,
                [
                    _link_row(enrollment_id, new, now)
                    for new in written.links.values()
                    if new is not None
                ],
                key=("enrollment_id", "source_id"),
                columns=_LINK_COLUMNS,
            )
            # Marks that make the next run put these right: re-create, or rewrite.
            for source_ids, marks in (
                (written.missing, {"change_key": MISSING}),
                (written.removed, {"change_key": REMOVED}),
                (written.stale, {"content_hash": ""}),
            ):
                if source_ids:
                    await session.execute(
                        update(EventLink)
                        .where(
                            EventLink.enrollment_id == snapshot.enrollment_id,
                            EventLink.source_id.in_(source_ids),
                        )
                        .values(**marks)
                    )
            ours = {link.event_id for link in written.links.values() if link is not None} | {
                link.event_id for link in snapshot.links
            }
            report.busy_blocks = await self._store_busy(session, snapshot, outlook, full, ours)
            state.delta_link = delta_link
            if full:
                state.delta_started_at = started
                window = outlook.view.window
                assert window is not None
                state.delta_window_start, state.delta_window_end = window.start, window.end
            state.source_count = source_count
            state.source_fingerprint = fingerprint
            state.source_marker = marker
            _count(state, report)
            was_failing = state.consecutive_failures > 0
            state.consecutive_failures = (
                0 if report.failed_writes == 0 else (state.consecutive_failures + 1)
            )
            enrollment = await session.get(Enrollment, snapshot.enrollment_id)
            if enrollment is not None:
                enrollment.last_run_at = now
                previous_kind = enrollment.last_error_kind
                if report.failed_writes:
                    report.ok = False
                    report.error_kind = FailureKind.OTHER
                    report.error = f"{report.failed_writes} calendar writes failed"
                    enrollment.last_error = report.error
                    enrollment.last_error_kind = report.error_kind.value
                else:
                    enrollment.last_success_at = now
                    enrollment.last_error = None
                    enrollment.last_error_kind = None
                    enrollment.last_sync_summary = _summary(report)
            report.recovered = was_failing and report.ok
            if report.recovered and enrollment is not None and previous_kind:
                report.recovered_from = _kind(previous_kind)
        report.lease_released = lease_owner is not None
        if self._source.accepts_busy:
            await self._source.write_busy(snapshot.profile_id, list(outlook.busy.values()))

    async def _store_busy(
        self,
        session: AsyncSession,
        snapshot: Snapshot,
        outlook: OutlookRead,
        full: bool,
        ours: set[str],
    ) -> int:
        enrollment_id = snapshot.enrollment_id
        if full:
            await session.execute(
                delete(BusyBlockRecord).where(BusyBlockRecord.enrollment_id == enrollment_id)
            )
        else:
            await _delete_in(
                session,
                BusyBlockRecord.event_id,
                outlook.not_busy | ours | set(outlook.busy),
                BusyBlockRecord.enrollment_id == enrollment_id,
            )
        await upsert_rows(
            session,
            BusyBlockRecord,
            [
                {
                    "enrollment_id": enrollment_id,
                    "event_id": event_id,
                    "start_at": block.start,
                    "end_at": block.end,
                    "show_as": block.show_as,
                }
                for event_id, block in outlook.busy.items()
                if event_id not in ours
            ],
            key=("enrollment_id", "event_id"),
            columns=("start_at", "end_at", "show_as"),
        )
        count = await session.scalar(
            select(func.count())
            .select_from(BusyBlockRecord)
            .where(BusyBlockRecord.enrollment_id == enrollment_id)
        )
        return int(count or 0)

    async def _commit_quiet(
        self,
        snapshot: Snapshot,
        written: tuple[str, str | None],
        report: SyncReport,
        lease_owner: str | None,
    ) -> None:
        """What a run with nothing to do writes: the round's new link and the run's stamps.

        Graph does not say whether an empty round hands out the link it was given or a new one
        (each ``$deltatoken`` is an opaque snapshot of the round); a new one is stored, since
        the old one may expire sooner, and an unchanged one is not written again. The stamps
        (last run, last success, summary) are what ``status`` shows the person, so they move
        on, and the worker's lease is given back in the same UPDATE. A new source marker (the
        source was read and hashed as before) is stored, so the next run need not read it. The
        state row is written only where something in it changes; links and busy blocks are not
        touched.
        """
        delta_link, marker = written
        now = self._clock()
        enrollment_id = snapshot.enrollment_id
        counts = {"created": 0, "updated": 0, "deleted": 0, "requests": report.requests}
        state: dict[str, Any] = {
            name: value for name, value in counts.items() if snapshot.counts.get(name) != value
        }
        if delta_link != snapshot.delta_link:
            state["delta_link"] = delta_link
        if marker != snapshot.marker:
            state["source_marker"] = marker
        claimed = update(SyncState).where(SyncState.enrollment_id == enrollment_id)
        if lease_owner is not None:
            claimed = claimed.where(SyncState.lease_owner == lease_owner)
            state["lease_owner"] = state["lease_expires_at"] = None
        async with write_transaction(self._sessions) as session:
            if state:
                result = await session.execute(
                    claimed.values(**state), execution_options=_NO_ORM_SYNC
                )
                if not cast(CursorResult[Any], result).rowcount:
                    raise LeaseLostError(enrollment_id)  # or the row is gone: nothing to stamp
            await session.execute(
                update(Enrollment)
                .where(Enrollment.id == enrollment_id)
                .values(last_run_at=now, last_success_at=now, last_sync_summary=_summary(report)),
                execution_options=_NO_ORM_SYNC,
            )
        report.lease_released = lease_owner is not None

    async def _record_failure(self, snapshot: Snapshot, report: SyncReport) -> None:
        async with write_transaction(self._sessions) as session:
            state = await self._state(session, snapshot.enrollment_id)
            state.consecutive_failures += 1
            state.source_fingerprint = state.source_marker = None  # the next run is a full one
            enrollment = await session.get(Enrollment, snapshot.enrollment_id)
            if enrollment is not None:
                enrollment.last_run_at = self._clock()
                enrollment.last_error = report.error
                enrollment.last_error_kind = report.error_kind.value if report.error_kind else None

    # -- loading ---------------------------------------------------------------------------

    async def _load(self, enrollment_id: int) -> Snapshot | None:
        """The person's snapshot, for a run with no batch read for it (see sync.snapshot)."""
        return (await load_snapshots(self._sessions, [enrollment_id])).get(enrollment_id)

    async def _links(self, enrollment_id: int) -> list[LinkView]:
        """The person's event links, read as plain values (no ORM objects to build and track)."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(
                    EventLink.source_id,
                    EventLink.event_id,
                    EventLink.content_hash,
                    EventLink.change_key,
                    EventLink.generation,
                    EventLink.starts_at,
                    EventLink.ends_at,
                ).where(EventLink.enrollment_id == enrollment_id)
            )
            return [LinkView(*row) for row in rows]

    async def _state(self, session: AsyncSession, enrollment_id: int) -> SyncState:
        state = await session.get(SyncState, enrollment_id, with_for_update=True)
        if state is None:
            state = SyncState(enrollment_id=enrollment_id, consecutive_failures=0)
            session.add(state)
        return state


# Columns a link's upsert overwrites: all but the key.
_LINK_COLUMNS = (
    "event_id",
    "content_hash",
    "change_key",
    "generation",
    "starts_at",
    "ends_at",
    "updated_at",
)
# Plain UPDATEs: nothing loaded in the session to bring in line with them.
_NO_ORM_SYNC = {"synchronize_session": False}
# Keys per DELETE ... IN: well inside SQLite's and asyncpg's limits on bound parameters.
_DELETE_CHUNK = 1000


def _quiet_round(snapshot: Snapshot, options: SyncOptions, round_: _Round) -> bool:
    """Whether this run's plan is empty if the source is as the last settled run read it.

    The last run must have settled everything (a stored fingerprint, no error since), and this
    round must continue the stored one and have seen no change at all (our events, the
    person's own ones, anything reported removed). The caller then compares the source, with
    the window, mapping and payload shape: by its marker, or by hashing a read. A forced run
    or a run allowed to delete always plans.
    """
    return (
        not options.full
        and not options.allow_deletions
        and not round_.full
        and not round_.result.items
        and snapshot.consecutive_failures == 0
        and snapshot.last_error is None
        and snapshot.fingerprint is not None
    )


def _link_row(enrollment_id: int, link: LinkView, now: datetime) -> dict[str, Any]:
    return {
        "enrollment_id": enrollment_id,
        "source_id": link.source_id,
        "event_id": link.event_id,
        "content_hash": link.content_hash,
        "change_key": link.change_key,
        "generation": link.generation,
        "starts_at": link.starts_at,
        "ends_at": link.ends_at,
        "updated_at": now,
    }


async def _delete_in(
    session: AsyncSession,
    column: InstrumentedAttribute[str],
    keys: Iterable[str],
    owner: Any,
) -> None:
    """Delete the person's rows (``owner``) whose ``column`` is one of ``keys``, in bulk."""
    keys = list(keys)
    for first in range(0, len(keys), _DELETE_CHUNK):
        await session.execute(
            delete(column.class_).where(owner, column.in_(keys[first : first + _DELETE_CHUNK])),
            execution_options=_NO_ORM_SYNC,
        )


def _kind(value: str) -> FailureKind | None:
    try:
        return FailureKind(value)
    except ValueError:
        return None


def _summary(report: SyncReport) -> str:
    return (
        f"{report.created} created, {report.updated} updated, {report.deleted} deleted, "
        f"{report.recreated} re-created, {report.busy_blocks} busy blocks"
    )


def _count(state: SyncState, report: SyncReport) -> None:
    state.created = report.created
    state.updated = report.updated
    state.deleted = report.deleted
    state.recreated = (state.recreated or 0) + report.recreated
    state.busy_blocks = report.busy_blocks
    state.requests = report.requests


def _transaction_id(enrollment_id: int, desired: Desired, generation: int) -> str:
    """Stable per (enrollment, appointment, re-creation): a repeated create returns the same event.

    Graph keeps transaction ids for a while after an event is deleted, which is why a re-creation
    after a deletion in Outlook needs a new generation, not the old id.
    """
    raw = f"syncwarden:{enrollment_id}:{desired.appointment.id}:{generation}"
    return hashlib.sha256(raw.encode()).hexdigest()[:36]
