"""Quiet people cost one delta round and one look at the source, and no change is missed.

A person whose delta round saw nothing and whose source is as it was on the last run that left
Outlook as planned is not planned at all: no links or busy blocks are read, and only the
round's new link, the lease and the run's stamps are written. "As it was" is the source's
change marker where it keeps one (the built-in table: no appointment is read), else a read
hashed to the stored fingerprint; tests marked with ``source_kind`` run both ways. Every test
counts the SQL the engine sends (an engine event listener) and runs on SQLite and PostgreSQL
against the sandbox.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.connectors.graph.client import DeltaResult
from syncwarden.connectors.scheduling.builtin_appointments import (
    AppointmentRecord,
    BuiltinAppointments,
)
from syncwarden.connectors.scheduling.ports import Appointment, BusyBlock, ChangeMarkers, Window
from syncwarden.core.db import write_transaction
from syncwarden.core.settings import SyncSettings
from syncwarden.sync.engine import SyncEngine
from syncwarden.sync.quiet import QuietWrites
from syncwarden.sync.records import BusyBlockRecord, SyncState
from syncwarden.sync.snapshot import PREPARED_SECONDS
from syncwarden.sync.worker import SyncWorker
from syncwarden.workflows.records import Enrollment
from tests.support.outlook import add_own_event
from tests.support.sync_world import AVERY, World, world

ROWAN = "rowan.ibarra@example.edu"

__all__ = ["world"]  # the fixture, imported for pytest

PLAN_TABLES = ("sync_event_links", "sync_busy_blocks")
APPOINTMENTS = "scheduling_appointments"
MARKERS = "scheduling_appointment_changes"
WRITE = re.compile(r"^\s*(INSERT INTO|UPDATE|DELETE FROM)\s+(\w+)", re.IGNORECASE)


class Statements(list[str]):
    """Every statement the database was sent while recording."""

    def writes(self) -> list[tuple[str, str]]:
        found = (WRITE.match(statement) for statement in self)
        return [(m.group(1).split()[0].upper(), m.group(2)) for m in found if m]

    def touching(self, table: str) -> list[str]:
        return [statement for statement in self if re.search(rf"\b{table}\b", statement)]

    def planned(self) -> bool:
        """Whether the run read links or busy blocks, which only planning needs."""
        return any(self.touching(table) for table in PLAN_TABLES)


@contextmanager
def recorded(engine: AsyncEngine) -> Iterator[Statements]:
    seen = Statements()

    def record(_connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


class WithoutMarkers:
    """The built-in table behind the bare source port, as an ICS feed or an outside database
    is: no change markers, so the engine must read and hash it on every run."""

    name = "without markers"
    accepts_busy = False

    def __init__(self, table: BuiltinAppointments) -> None:
        self._table = table

    async def list_appointments(self, profile_id: str, window: Window) -> Sequence[Appointment]:
        return await self._table.list_appointments(profile_id, window)

    async def write_busy(self, profile_id: str, blocks: Sequence[BusyBlock]) -> None:
        """Nothing to write."""


@pytest.fixture(params=["markers", "read"])
def source_kind(request: pytest.FixtureRequest, world: World) -> str:
    """``markers``: the built-in source as it is; ``read``: the same table without markers."""
    if request.param == "read":
        world.read_through(WithoutMarkers(world.source))
        assert not isinstance(world.engine._source, ChangeMarkers)
    return str(request.param)


def looked_at_source(seen: Statements, source_kind: str) -> bool:
    """Whether a run that planned nothing compared the source as its kind allows, and only so."""
    if source_kind == "markers":
        return bool(seen.touching(MARKERS)) and not seen.touching(APPOINTMENTS)
    return bool(seen.touching(APPOINTMENTS)) and not seen.touching(MARKERS)


async def settled(world: World, appointments: int = 5) -> int:
    """Avery enrolled, ``appointments`` pushed, and the run that settles them done."""
    enrollment = await world.enroll()
    await world.source.upsert(
        "P-1", [world.appointment(n, days=n) for n in range(1, 1 + appointments)]
    )
    first = await world.sync(enrollment)
    assert first.ok and first.created == appointments, first.error
    return enrollment


async def fingerprint_of(world: World, enrollment: int) -> str | None:
    async with world.sessions() as session:
        return await session.scalar(
            select(SyncState.source_fingerprint).where(SyncState.enrollment_id == enrollment)
        )


async def test_a_quiet_person_reads_no_links_and_writes_only_link_and_stamps(
    world: World, migrated_engine: AsyncEngine, source_kind: str
) -> None:
    enrollment = await settled(world)
    world.tenant.clear_requests()
    world.clock.advance(timedelta(minutes=5))

    with recorded(migrated_engine) as seen:
        report = await world.sync(enrollment)

    assert report.ok and report.writes == 0 and not report.full_resync
    assert world.graph_requests() == [f"GET /users/{world.user_id(AVERY)}/calendarView/delta"]
    assert not seen.planned(), seen
    # With markers, no appointment is read; without, the read is hashed to compare it.
    assert looked_at_source(seen, source_kind), seen
    # The sandbox hands out a new delta link each round: it is stored, with the run's stamps.
    assert seen.writes() == [("UPDATE", "sync_states"), ("UPDATE", "enrollments")]
    async with world.sessions() as session:
        row = await session.get(Enrollment, enrollment)
    assert row is not None and row.last_success_at == world.clock.now
    assert row.last_sync_summary is not None and row.last_sync_summary.startswith("0 created")


async def test_a_quiet_round_that_keeps_its_link_writes_only_the_stamps(
    world: World, migrated_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Graph may answer an empty round with the link it was given; nothing is rewritten then."""
    enrollment = await settled(world)
    await world.sync(enrollment)  # the counts now say what a quiet run says
    calendar = world.m365.calendar
    real = calendar.delta

    async def same_link_when_empty(mailbox: str, **options: Any) -> DeltaResult:
        result = await real(mailbox, **options)
        given = options.get("delta_link")
        return replace(result, delta_link=given) if given and not result.items else result

    monkeypatch.setattr(calendar, "delta", same_link_when_empty)
    await world.sync(enrollment)  # stores the link this round hands back for good

    with recorded(migrated_engine) as seen:
        report = await world.sync(enrollment)

    assert report.ok and report.writes == 0
    assert seen.writes() == [("UPDATE", "enrollments")]
    assert not seen.planned()


async def test_a_changed_source_is_synced_after_quiet_runs(
    world: World, migrated_engine: AsyncEngine, source_kind: str
) -> None:
    enrollment = await settled(world)
    assert (await world.sync(enrollment)).writes == 0
    moved = world.appointment(2, days=2.5)
    await world.source.upsert("P-1", [moved, world.appointment(9, days=9)])

    with recorded(migrated_engine) as seen:
        report = await world.sync(enrollment)

    assert report.ok and (report.created, report.updated) == (1, 1)
    assert seen.planned()
    pushed = world.pushed()
    assert pushed["A-2"].start == moved.start and "A-9" in pushed
    with recorded(migrated_engine) as after:
        assert (await world.sync(enrollment)).writes == 0
    assert not after.planned()
    assert looked_at_source(after, source_kind), after


WRITERS = [
    "upsert new",
    "upsert changed",
    "delete",
    "cancel missing",
    "core insert",
    "sql update",
    "sql move",
    "sql delete",
]


async def write_to_source(world: World, writer: str) -> tuple[int, int, int]:
    """One change to Avery's five appointments, by one of the ways the table is written; the
    (created, updated, deleted) the next run must show for it."""
    if writer == "upsert new":
        await world.source.upsert("P-1", [world.appointment(9, days=9)])
        return 1, 0, 0
    if writer == "upsert changed":
        await world.source.upsert("P-1", [world.appointment(2, days=2, subject="Renamed")])
        return 0, 1, 0
    if writer == "delete":
        assert await world.source.delete("P-1", "A-3")
        return 0, 0, 1
    if writer == "cancel missing":
        keep = {"A-1", "A-2", "A-3", "A-5"}
        assert await world.source.cancel_missing("P-1", _wide(world), keep) == 1
        return 0, 0, 1
    async with write_transaction(world.sessions) as session:
        if writer == "core insert":  # an integration with its own statements, not the class
            added = world.appointment(9, days=9)
            await session.execute(
                insert(AppointmentRecord).values(
                    profile_id="P-1",
                    id=added.id,
                    subject=added.subject,
                    start_at=added.start,
                    end_at=added.end,
                    time_zone=added.time_zone,
                )
            )
            return 1, 0, 0
        statement = {
            "sql update": "UPDATE scheduling_appointments SET subject = 'Renamed' WHERE id = 'A-2'",
            "sql move": "UPDATE scheduling_appointments SET profile_id = 'P-9' WHERE id = 'A-4'",
            "sql delete": "DELETE FROM scheduling_appointments WHERE id = 'A-3'",
        }[writer]
        await session.execute(text(statement))
    return (0, 1, 0) if writer == "sql update" else (0, 0, 1)


@pytest.mark.parametrize("writer", WRITERS)
async def test_every_way_of_writing_the_source_is_synced_after_quiet_runs(
    world: World, migrated_engine: AsyncEngine, writer: str, source_kind: str
) -> None:
    """The marker moves whoever writes the table (our class, another statement, plain SQL),
    and for every kind of change: added, changed, deleted, cancelled, moved to another profile."""
    enrollment = await settled(world)
    assert (await world.sync(enrollment)).writes == 0
    expected = await write_to_source(world, writer)

    with recorded(migrated_engine) as seen:
        report = await world.sync(enrollment)

    assert report.ok, report.error
    assert (report.created, report.updated, report.deleted) == expected
    assert seen.planned()
    with recorded(migrated_engine) as after:
        assert (await world.sync(enrollment)).writes == 0
    assert not after.planned()
    assert looked_at_source(after, source_kind), after


async def test_a_change_that_leaves_the_window_alone_costs_one_read(
    world: World, migrated_engine: AsyncEngine
) -> None:
    """An appointment booked past the round's window moves the marker but not the plan: that
    run reads and hashes the source, finds it as it was, stores the new marker and plans
    nothing; the run after it reads no appointment again."""
    enrollment = await settled(world)
    await world.source.upsert("P-1", [world.appointment(9, days=400)])

    with recorded(migrated_engine) as seen:
        report = await world.sync(enrollment)

    assert report.ok and report.writes == 0
    assert not seen.planned() and seen.touching(APPOINTMENTS)
    assert ("UPDATE", "sync_states") in seen.writes()
    with recorded(migrated_engine) as after:
        assert (await world.sync(enrollment)).writes == 0
    assert looked_at_source(after, "markers"), after


async def test_a_change_in_outlook_is_put_right_after_quiet_runs(
    world: World, migrated_engine: AsyncEngine
) -> None:
    enrollment = await settled(world)
    assert (await world.sync(enrollment)).writes == 0
    pushed = world.pushed()
    pushed["A-1"].subject = "moved by hand"
    pushed["A-1"].touch()
    own = await add_own_event(world.m365, world.user_id(AVERY), world.now + timedelta(days=3))

    with recorded(migrated_engine) as seen:
        report = await world.sync(enrollment)

    assert report.ok and (report.updated, report.overwritten) == (1, 1)
    assert seen.planned()
    assert world.pushed()["A-1"].subject == "Client 1"
    async with world.sessions() as session:
        blocks = set(
            (
                await session.scalars(
                    select(BusyBlockRecord.event_id).where(
                        BusyBlockRecord.enrollment_id == enrollment
                    )
                )
            ).all()
        )
    assert own in blocks
    with recorded(migrated_engine) as after:
        assert (await world.sync(enrollment)).writes == 0
    assert not after.planned()


@pytest.mark.parametrize("reason", ["forced", "new round", "mapping", "subject", "failure"])
async def test_each_reason_to_plan_again_bypasses_the_shortcut(
    world: World, migrated_engine: AsyncEngine, reason: str, source_kind: str
) -> None:
    """A forced resync, a restarted round (new window), a changed mapping or payload shape,
    and an error on the previous run each make the run plan against its links."""
    enrollment = await settled(world)
    options: dict[str, Any] = {}
    if reason == "forced":
        options["full"] = True
    elif reason == "new round":
        world.clock.advance(timedelta(hours=25))
    elif reason == "mapping":
        appointments = await world.source.list_appointments("P-1", _wide(world))
        await world.source.upsert("P-2", appointments)
        async with write_transaction(world.sessions) as session:
            await session.execute(
                update(Enrollment).where(Enrollment.id == enrollment).values(profile_id="P-2")
            )
    elif reason == "subject":
        world.use_settings(subject_template="Booked: {subject}")
    else:
        world.tenant.add_fault(
            r"/calendarView/delta",
            status=429,
            code="ApplicationThrottled",
            retry_after="0",
            count=99,
        )
        failed = await world.sync(enrollment)
        assert not failed.ok
        assert await fingerprint_of(world, enrollment) is None
        world.tenant.clear_faults()

    with recorded(migrated_engine) as seen:
        report = await world.sync(enrollment, **options)

    assert report.ok, report.error
    assert seen.planned(), f"{reason}: the run took the quiet shortcut"
    if reason == "subject":
        assert report.updated == 5 and world.pushed()["A-1"].subject == "Booked: Client 1"
    if reason == "failure":
        assert report.recovered
    assert await fingerprint_of(world, enrollment) is not None
    with recorded(migrated_engine) as after:
        assert (await world.sync(enrollment)).writes == 0
    assert not after.planned(), f"{reason}: the run after it is quiet again"
    assert looked_at_source(after, source_kind), after


async def test_a_run_cut_off_after_its_writes_is_never_taken_for_quiet(
    world: World, monkeypatch: pytest.MonkeyPatch, migrated_engine: AsyncEngine, source_kind: str
) -> None:
    """The worst case for the shortcut: the source changes, a run writes it to Outlook and dies
    before its commit, then the source changes back. The source hashes as the settled run's,
    but Outlook differs; the round shows the dead run's write, so the run plans and puts the
    event back, and only then are runs quiet again."""
    enrollment = await settled(world)
    original = world.appointment(1, days=1)
    await world.source.upsert("P-1", [replace(original, subject="Renamed")])

    async def die(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the process died before it could record what it wrote")

    with monkeypatch.context() as patched:
        patched.setattr(SyncEngine, "_commit", die)
        with pytest.raises(RuntimeError):
            await world.sync(enrollment)
    assert world.pushed()["A-1"].subject == "Renamed"
    await world.source.upsert("P-1", [original])

    with recorded(migrated_engine) as seen:
        report = await world.sync(enrollment)

    assert report.ok and report.updated == 1
    assert seen.planned()
    assert world.pushed()["A-1"].subject == "Client 1"
    assert all(count == 1 for count in world.pushed_counts().values())
    with recorded(migrated_engine) as after:
        assert (await world.sync(enrollment)).writes == 0
    assert not after.planned()


async def test_anything_left_for_the_next_run_keeps_it_from_being_quiet(world: World) -> None:
    """A deferred creation leaves no fingerprint, so the next run creates the rest."""
    world.use_settings(subject_template="{subject}", max_creations_per_run=2)
    enrollment = await world.enroll()
    await world.source.upsert("P-1", [world.appointment(n, days=n) for n in range(1, 4)])

    first = await world.sync(enrollment)

    assert (first.created, first.deferred) == (2, 1)
    assert await fingerprint_of(world, enrollment) is None
    assert (await world.sync(enrollment)).created == 1
    assert await fingerprint_of(world, enrollment) is not None


async def quiet_worker_world(world: World) -> tuple[SyncWorker, list[int]]:
    """Three people (two profiles on Avery's mailbox, one on Rowan's) synced and settled by a
    worker on the test's clock, and asked for again."""
    people = [
        await world.enroll(AVERY, "P-1"),
        await world.enroll(AVERY, "P-2"),
        await world.enroll(ROWAN, "P-3"),
    ]
    for number, profile in enumerate(("P-1", "P-2", "P-3")):
        await world.source.upsert(profile, [world.appointment(10 * number + 1, days=number + 1)])
    worker = SyncWorker(world.sessions, world.engine, SyncSettings(), clock=world.clock)
    await worker.request(people)
    assert all(report.ok and report.created == 1 for report in await worker.run_requested())
    # Avery's two enrollments share a mailbox: each sees the other's event once, as busy time.
    await worker.request(people)
    assert all(report.ok and report.writes == 0 for report in await worker.run_requested())
    await worker.request(people)
    return worker, people


async def stored_links(world: World, people: list[int]) -> dict[int, str | None]:
    async with world.sessions() as session:
        rows = await session.execute(
            select(SyncState.enrollment_id, SyncState.delta_link).where(
                SyncState.enrollment_id.in_(people)
            )
        )
        return {enrollment: link for enrollment, link in rows}


async def test_a_worker_writes_its_quiet_people_together(
    world: World, migrated_engine: AsyncEngine
) -> None:
    """A quiet run's writes (new link, lease release, stamps) wait for the others' and go in
    one executemany per table, not in a transaction per person; what the runs need before they
    start (snapshots, the source's markers) is read once for them all."""
    worker, people = await quiet_worker_world(world)
    before = await stored_links(world, people)
    world.clock.advance(timedelta(minutes=5))

    with recorded(migrated_engine) as seen:
        reports = await worker.run_requested()

    assert all(r.ok and r.writes == 0 and r.lease_released for r in reports), reports
    assert not seen.planned()
    # One read of the snapshots and one of the change markers for the claimed batch, and no
    # appointment read at all.
    snapshot_reads = [s for s in seen if "FROM enrollments LEFT OUTER JOIN sync_states" in s]
    assert len(snapshot_reads) == 1, seen
    assert len(seen.touching(MARKERS)) == 1 and not seen.touching(APPOINTMENTS), seen
    quiet_writes = [s for s in seen if s.startswith("UPDATE sync_states") and "delta_link" in s]
    assert len(quiet_writes) == 1, seen.writes()
    assert seen.writes().count(("UPDATE", "enrollments")) == 1, seen.writes()
    after = await stored_links(world, people)
    assert all(after[person] not in (None, before[person]) for person in people)
    async with world.sessions() as session:
        states = (
            await session.scalars(select(SyncState).where(SyncState.enrollment_id.in_(people)))
        ).all()
        stamps = (
            await session.scalars(
                select(Enrollment.last_success_at).where(Enrollment.id.in_(people))
            )
        ).all()
    assert all(state.lease_owner is None and state.lease_expires_at is None for state in states)
    assert set(stamps) == {world.clock.now}


async def test_a_batch_read_too_long_before_a_run_is_not_used_by_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """People paused after their batch was read: a run that starts soon after the read acts
    on it; one that starts later than a batch read may serve reads its own, and is skipped."""
    _worker, people = await quiet_worker_world(world)
    prepared = await world.engine.prepare(people)
    async with write_transaction(world.sessions) as session:
        await session.execute(
            update(Enrollment).where(Enrollment.id.in_(people[:2])).values(paused=True)
        )
    clock = "syncwarden.sync.snapshot.time.monotonic"
    monkeypatch.setattr(clock, lambda: prepared.read_at + PREPARED_SECONDS / 2)
    assert (await world.engine.sync(people[0], prepared=prepared)).skipped is None
    monkeypatch.setattr(clock, lambda: prepared.read_at + PREPARED_SECONDS + 1)

    report = await world.engine.sync(people[1], prepared=prepared)

    assert report.skipped == "paused"


async def test_a_failed_quiet_write_loses_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The runs stand; the leases run out by themselves and the stored links still work."""
    worker, people = await quiet_worker_world(world)
    before = await stored_links(world, people)

    async def refused(self: QuietWrites) -> None:
        raise RuntimeError("the database went away")

    with monkeypatch.context() as patched:
        patched.setattr(QuietWrites, "write", refused)
        reports = await worker.run_requested()

    assert all(report.ok for report in reports)
    assert await stored_links(world, people) == before
    world.clock.advance(timedelta(seconds=SyncSettings().lease_seconds + 1))
    await worker.request(people)
    again = await worker.run_requested()
    assert sorted(r.enrollment_id for r in again if r.ok and r.writes == 0) == sorted(people)
    assert all(
        link != before[person] for person, link in (await stored_links(world, people)).items()
    )


@pytest.mark.parametrize("taken_over", [False, True])
async def test_a_quiet_write_touches_only_people_whose_lease_is_still_ours(
    world: World, taken_over: bool
) -> None:
    enrollment = await settled(world)
    async with write_transaction(world.sessions) as session:
        await session.execute(
            update(SyncState)
            .where(SyncState.enrollment_id == enrollment)
            .values(lease_owner="worker-a")
        )
    before = await stored_links(world, [enrollment])
    writes = QuietWrites(world.sessions, "worker-a")
    world.clock.advance(timedelta(minutes=5))
    report = await world.engine.sync(enrollment, lease_owner="worker-a", quiet=writes)
    assert report.ok and report.lease_released and len(writes) == 1
    if taken_over:  # the lease ran out and another worker took the person
        async with write_transaction(world.sessions) as session:
            await session.execute(
                update(SyncState)
                .where(SyncState.enrollment_id == enrollment)
                .values(lease_owner="worker-b")
            )

    await writes.write()

    async with world.sessions() as session:
        state = await session.get(SyncState, enrollment)
        row = await session.get(Enrollment, enrollment)
    assert state is not None and row is not None
    if taken_over:
        assert state.lease_owner == "worker-b"
        assert await stored_links(world, [enrollment]) == before
        assert row.last_success_at != world.clock.now
    else:
        assert state.lease_owner is None
        assert await stored_links(world, [enrollment]) != before
        assert row.last_success_at == world.clock.now


def _wide(world: World) -> Window:
    return Window(world.now - timedelta(days=365), world.now + timedelta(days=365))
