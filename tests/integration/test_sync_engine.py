"""The calendar sync engine against the sandbox tenant, over real HTTPS, on SQLite and PostgreSQL.

Each test enrolls a sandbox person, loads appointments into the built-in source and runs the
engine as the worker would; Outlook-side changes are made through the sandbox's own state, as a
person editing their calendar would make them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from syncwarden.connectors.scheduling.ports import Appointment
from syncwarden.core.db import write_transaction
from syncwarden.core.settings import SyncSettings
from syncwarden.sync.engine import SyncEngine
from syncwarden.sync.errors import FailureKind
from syncwarden.sync.records import BusyBlockRecord, EventLink
from syncwarden.workflows.records import Enrollment
from tests.support.m365 import M365Factory
from tests.support.outlook import add_own_event
from tests.support.sync_world import World, world

__all__ = ["world"]  # the fixture, imported for pytest

AVERY = "avery.quinlan@example.edu"
OUTSIDE_POLICY = "sasha.verhoeven@example.edu"


async def busy_blocks(world: World, enrollment_id: int) -> list[BusyBlockRecord]:
    async with world.sessions() as session:
        rows = await session.scalars(
            select(BusyBlockRecord).where(BusyBlockRecord.enrollment_id == enrollment_id)
        )
        return list(rows.all())


async def test_first_sync_pushes_every_appointment_and_reads_busy_time(world: World) -> None:
    enrollment = await world.enroll()
    await world.source.upsert("P-1", [world.appointment(n, days=n) for n in range(1, 6)])

    report = await world.sync(enrollment)

    assert report.ok, report.error
    assert (report.created, report.updated, report.deleted) == (5, 0, 0)
    assert report.full_resync
    pushed = world.pushed()
    assert sorted(pushed) == [f"A-{n}" for n in range(1, 6)]
    assert pushed["A-1"].subject == "Client 1"
    # The person's own events (a drop-in, a recurring stand-up, an out-of-office) are busy time.
    blocks = await busy_blocks(world, enrollment)
    assert report.busy_blocks == len(blocks) >= 3
    assert {b.show_as for b in blocks} == {"busy", "oof"}
    async with world.sessions() as session:
        row = await session.get(Enrollment, enrollment)
    assert row is not None and row.last_sync_summary == (
        f"5 created, 0 updated, 0 deleted, 0 re-created, {len(blocks)} busy blocks"
    )


async def test_steady_state_costs_one_delta_request_and_writes_nothing(world: World) -> None:
    enrollment = await world.enroll()
    await world.source.upsert("P-1", [world.appointment(n, days=n) for n in range(1, 6)])
    first = await world.sync(enrollment)
    # The first run catches up with its own writes, so the next round starts after them.
    assert first.requests == 3  # a full delta round, one $batch, the catch-up round
    world.tenant.clear_requests()

    report = await world.sync(enrollment)

    assert report.ok and report.writes == 0
    assert world.graph_requests() == [f"GET /users/{world.user_id(AVERY)}/calendarView/delta"]


async def test_source_edits_and_cancellations_update_and_delete_only_those(world: World) -> None:
    enrollment = await world.enroll()
    appointments = [world.appointment(n, days=n) for n in range(1, 11)]
    await world.source.upsert("P-1", appointments)
    await world.sync(enrollment)
    moved = world.appointment(2, days=2.5)
    cancelled = world.appointment(3, days=3, cancelled=True)
    await world.source.upsert("P-1", [moved, cancelled])

    report = await world.sync(enrollment)

    assert (report.created, report.updated, report.deleted) == (0, 1, 1)
    pushed = world.pushed()
    assert "A-3" not in pushed
    assert pushed["A-2"].start == moved.start


async def test_outlook_side_edit_is_overwritten_and_deletion_recreated(world: World) -> None:
    enrollment = await world.enroll()
    await world.source.upsert("P-1", [world.appointment(n, days=n) for n in range(1, 4)])
    await world.sync(enrollment)
    events = world.tenant.state.mailbox_events(world.user_id(AVERY))
    pushed = world.pushed()
    pushed["A-1"].subject = "moved by hand"
    pushed["A-1"].touch()
    del events[pushed["A-2"].id]

    report = await world.sync(enrollment)

    assert (report.updated, report.recreated, report.overwritten) == (1, 1, 1)
    again = world.pushed()
    assert again["A-1"].subject == "Client 1"
    assert sorted(again) == ["A-1", "A-2", "A-3"]
    # And the next run is quiet: our overwrite and re-creation are not mistaken for edits.
    quiet = await world.sync(enrollment)
    assert quiet.writes == 0


async def test_other_events_become_busy_blocks_and_leave_when_deleted(world: World) -> None:
    enrollment = await world.enroll()
    await world.sync(enrollment)
    before = {b.event_id for b in await busy_blocks(world, enrollment)}
    start = world.now + timedelta(days=4)
    event_id = await add_own_event(world.m365, world.user_id(AVERY), start, "Private: doctor")

    await world.sync(enrollment)
    blocks = {b.event_id: b for b in await busy_blocks(world, enrollment)}
    assert set(blocks) == before | {event_id}
    assert blocks[event_id].start_at == start.replace(microsecond=0)
    assert not hasattr(blocks[event_id], "subject")

    await world.m365.calendar.delete_event(world.user_id(AVERY), event_id)
    await world.sync(enrollment)
    assert {b.event_id for b in await busy_blocks(world, enrollment)} == before


async def test_all_day_and_dst_weekend_keep_their_dates_and_wall_clock_times(
    world: World,
) -> None:
    from zoneinfo import ZoneInfo

    london = ZoneInfo("Europe/London")
    enrollment = await world.enroll()
    year = world.now.year + (1 if world.now.month >= 3 else 0)
    # The Monday after the spring change (last Sunday of March): 09:00 BST is 08:00 UTC, where
    # the Friday before it 09:00 GMT was 09:00 UTC.
    last_sunday = max(
        datetime(year, 3, day, tzinfo=london)
        for day in range(25, 32)
        if datetime(year, 3, day).weekday() == 6
    )
    friday = (last_sunday - timedelta(days=2)).replace(hour=9)
    monday = (last_sunday + timedelta(days=1)).replace(hour=9)
    day_off = world.now.astimezone(london).replace(hour=0, minute=0, second=0, microsecond=0)
    appointments = [
        world.appointment(1, start=friday, end=friday + timedelta(hours=1)),
        world.appointment(2, start=monday, end=monday + timedelta(hours=1)),
        world.appointment(
            3,
            start=day_off + timedelta(days=2),
            end=day_off + timedelta(days=3),
            all_day=True,
        ),
    ]
    await world.source.upsert("P-1", appointments)
    world.use_settings(days_ahead=730)

    report = await world.sync(enrollment)

    assert report.ok, report.error
    pushed = world.pushed()
    assert pushed["A-1"].start.hour == 9 and pushed["A-1"].start.tzinfo is not None
    assert pushed["A-1"].start.astimezone(UTC).hour == 9
    assert pushed["A-2"].start.astimezone(UTC).hour == 8
    assert pushed["A-2"].start.astimezone(london).hour == 9
    all_day = pushed["A-3"]
    assert all_day.is_all_day
    assert all_day.start.astimezone(london).date() == (day_off + timedelta(days=2)).date()
    assert all_day.end - all_day.start == timedelta(days=1)


async def test_an_expired_delta_link_falls_back_to_a_full_round(world: World) -> None:
    enrollment = await world.enroll()
    await world.source.upsert("P-1", [world.appointment(n, days=n) for n in range(1, 4)])
    await world.sync(enrollment)
    world.tenant.expire_delta_tokens()

    report = await world.sync(enrollment)

    assert report.ok and report.full_resync
    assert report.writes == 0
    assert sorted(world.pushed()) == ["A-1", "A-2", "A-3"]


async def test_a_throttled_mailbox_is_waited_out(world: World) -> None:
    enrollment = await world.enroll()
    await world.source.upsert("P-1", [world.appointment(1)])
    world.tenant.add_fault(
        r"/calendarView/delta",
        status=429,
        code="ApplicationThrottled",
        message="Application is over its MailboxConcurrency limit.",
        retry_after="0.2",
        count=2,
    )

    report = await world.sync(enrollment)

    assert report.ok, report.error
    throttled = [r for r in world.tenant.requests if r.status == 429]
    assert len(throttled) == 2
    assert report.created == 1


async def test_a_mailbox_outside_the_policy_fails_classified_then_recovers(
    world: World,
) -> None:
    enrollment = await world.enroll(OUTSIDE_POLICY)
    await world.source.upsert("P-1", [world.appointment(1)])

    failed = await world.sync(enrollment)

    assert not failed.ok and failed.error_kind is FailureKind.NOT_IN_SCOPE
    async with world.sessions() as session:
        row = await session.get(Enrollment, enrollment)
        assert row is not None and row.last_error_kind == "not_in_scope"
        assert row.last_success_at is None
    world.tenant.add_group_member(world.tenant.seed.group_ids["Calendar Sync"], OUTSIDE_POLICY)
    world.tenant.propagate_access_policy(world.tenant.seed.app_ids["Syncwarden"])

    recovered = await world.sync(enrollment)

    assert recovered.ok and recovered.recovered and recovered.created == 1
    async with world.sessions() as session:
        row = await session.get(Enrollment, enrollment)
        assert row is not None and row.last_error is None and row.last_success_at is not None


async def test_mass_deletion_and_empty_reads_stop_for_the_person(world: World) -> None:
    enrollment = await world.enroll()
    await world.source.upsert("P-1", [world.appointment(n, days=n) for n in range(1, 21)])
    await world.sync(enrollment)
    for number in range(1, 8):  # 7 of 20 = 35%
        await world.source.delete("P-1", f"A-{number}")

    stopped = await world.sync(enrollment)

    assert not stopped.ok and stopped.error_kind is FailureKind.SAFETY_VALVE
    assert "delete 7 of 20" in (stopped.error or "")
    assert len(world.pushed()) == 20

    for number in range(8, 21):
        await world.source.delete("P-1", f"A-{number}")
    empty = await world.sync(enrollment)
    assert empty.error_kind is FailureKind.SAFETY_VALVE
    assert "returned no appointments" in (empty.error or "")
    assert len(world.pushed()) == 20

    allowed = await world.sync(enrollment, allow_deletions=True)
    assert allowed.ok and allowed.deleted == 20
    assert world.pushed() == {}


async def test_creations_per_run_are_capped_soonest_first(world: World) -> None:
    enrollment = await world.enroll()
    await world.source.upsert("P-1", [world.appointment(n, days=n) for n in range(1, 8)])
    world.use_settings(max_creations_per_run=3)

    first = await world.sync(enrollment)
    assert (first.created, first.deferred) == (3, 4)
    assert sorted(world.pushed()) == ["A-1", "A-2", "A-3"]
    second = await world.sync(enrollment)
    third = await world.sync(enrollment)
    assert second.created + third.created == 4
    async with world.sessions() as session:
        links = await session.scalar(select(func.count()).select_from(EventLink))
    assert links == 7


async def test_a_paused_enrollment_is_not_synced(world: World) -> None:
    enrollment = await world.enroll()
    await world.source.upsert("P-1", [world.appointment(1)])
    async with write_transaction(world.sessions) as session:
        row = await session.get(Enrollment, enrollment)
        assert row is not None
        row.paused = True

    report = await world.sync(enrollment)

    assert report.skipped == "paused" and world.pushed() == {}


async def test_each_failure_is_classified_for_it(world: World, m365_factory: M365Factory) -> None:
    no_mailbox = await world.enroll("harper.osei@example.edu")
    assert (await world.sync(no_mailbox)).error_kind is FailureKind.NO_MAILBOX

    avery = await world.enroll()
    world.tenant.add_fault(
        r"/calendarView/delta", status=429, code="ApplicationThrottled", retry_after="0", count=99
    )
    throttled = await world.sync(avery)
    assert throttled.error_kind is FailureKind.THROTTLED
    world.tenant.clear_faults()

    wrong_secret = await m365_factory(graph={"client_secret": "not-it"})
    engine = SyncEngine(world.sessions, wrong_secret.calendar, world.source, SyncSettings())
    refused = await engine.sync(avery)
    assert refused.error_kind is FailureKind.CREDENTIAL
    assert "client secret is wrong" in (refused.error or "")


@dataclass
class BusyTakingSource:
    """A scheduling system that takes busy time back (the built-in one keeps it in our table)."""

    name: str = "busy-taking"
    accepts_busy: bool = True
    written: dict[str, list[Any]] = field(default_factory=dict)

    async def list_appointments(self, profile_id: str, window: Any) -> list[Appointment]:
        return []

    async def write_busy(self, profile_id: str, blocks: Any) -> None:
        self.written[profile_id] = list(blocks)


async def test_busy_time_is_handed_to_a_source_that_takes_it(world: World) -> None:
    enrollment = await world.enroll()
    source = BusyTakingSource()
    engine = SyncEngine(world.sessions, world.m365.calendar, source, SyncSettings())

    report = await engine.sync(enrollment)

    assert report.ok
    blocks = source.written["P-1"]
    assert len(blocks) == report.busy_blocks >= 3
    assert all(block.end > block.start and block.show_as in ("busy", "oof") for block in blocks)


async def test_an_event_gone_before_its_update_is_recreated_next_run_without_alarm(
    world: World,
) -> None:
    enrollment = await world.enroll()
    await world.source.upsert("P-1", [world.appointment(1)])
    await world.sync(enrollment)
    await world.source.upsert("P-1", [world.appointment(1, subject="Renamed")])
    # The person deletes it between our delta round and our write: the PATCH finds nothing.
    world.tenant.add_fault(
        r"/events/", method="PATCH", status=404, code="ErrorItemNotFound", count=1
    )

    first = await world.sync(enrollment)
    second = await world.sync(enrollment)

    assert first.ok and first.failed_writes == 0 and first.updated == 0
    assert second.ok and second.recreated == 1
