"""The sync engine against a sandbox that answers as Graph does where Graph is awkward.

Three behaviours of the real service each used to cost a duplicate per run or a lost event:
- ``calendarView/delta`` reports anything that changes *outside* its round's window as
  ``@removed`` (the ``event: delta`` page), while the engine's own window moved with the clock;
- ``@removed`` cannot tell a deleted event from one moved out of the window;
- a create that repeats a ``transactionId`` is answered with ``ErrorDuplicateTransactionId``
  (with or without the existing id, or 409), or perhaps with the first event, unchanged.
Every test here runs on SQLite and PostgreSQL against the sandbox over HTTPS.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from syncwarden.sync.engine import SyncEngine
from syncwarden.sync.records import BusyBlockRecord, EventLink
from tests.support.sync_world import World, world

__all__ = ["world"]  # the fixture, imported for pytest


def utc(moment: datetime) -> dict[str, str]:
    return {"dateTime": moment.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"}


async def links_of(world: World, enrollment_id: int) -> dict[str, str]:
    async with world.sessions() as session:
        rows = await session.scalars(
            select(EventLink).where(EventLink.enrollment_id == enrollment_id)
        )
        return {link.source_id: link.event_id for link in rows.all()}


async def busy_event_ids(world: World, enrollment_id: int) -> set[str]:
    async with world.sessions() as session:
        rows = await session.scalars(
            select(BusyBlockRecord.event_id).where(BusyBlockRecord.enrollment_id == enrollment_id)
        )
        return set(rows.all())


async def test_a_day_of_clock_inside_one_delta_round_makes_no_duplicates(world: World) -> None:
    """The window stays the delta round's until the round restarts, so nothing is pushed where
    delta would report it removed; appointments entering the window wait for the restart."""
    world.use_settings(subject_template="{subject}", days_back=1, days_ahead=10)
    enrollment = await world.enroll()
    edge = [world.appointment(n, days=10 + offset) for n, offset in enumerate((0.3, 0.6, 0.9), 1)]
    await world.source.upsert("P-1", [*edge, world.appointment(9, days=2)])

    first = await world.sync(enrollment)
    assert first.ok, first.error
    assert first.created == 1, "only the appointment inside the round's window is pushed"
    for _ in range(3):
        world.clock.advance(timedelta(hours=23 / 3))
        report = await world.sync(enrollment)
        assert report.ok, report.error
        assert not report.full_resync, "23 hours stay inside one delta round"
        assert (report.created, report.recreated) == (0, 0)
    assert dict(world.pushed_counts()) == {"A-9": 1}

    world.clock.advance(timedelta(hours=2))  # past SYNC__DELTA_RESTART_HOURS: a new round
    restarted = await world.sync(enrollment)
    assert restarted.full_resync and restarted.created == 3
    quiet = await world.sync(enrollment)
    assert quiet.writes == 0
    assert dict(world.pushed_counts()) == {"A-1": 1, "A-2": 1, "A-3": 1, "A-9": 1}


@pytest.mark.parametrize("full", [False, True], ids=["incremental", "full-round"])
async def test_a_pushed_event_moved_out_of_the_window_is_moved_back_not_duplicated(
    world: World, full: bool
) -> None:
    """``@removed`` (or absence from a full round) is checked by reading the event: one that
    still exists is written back over, as any edit in Outlook is; it is never re-created."""
    enrollment = await world.enroll()
    appointments = [world.appointment(n, days=n) for n in range(1, 4)]
    await world.source.upsert("P-1", appointments)
    assert (await world.sync(enrollment)).created == 3
    mailbox = world.user_id("avery.quinlan@example.edu")
    moved = (await links_of(world, enrollment))["A-2"]
    far = world.now + timedelta(days=400)
    await world.m365.graph.request(
        "PATCH",
        f"users/{mailbox}/events/{moved}",
        json_body={"start": utc(far), "end": utc(far + timedelta(hours=1))},
        mailbox=mailbox,
    )

    report = await world.sync(enrollment, full=full)

    assert report.ok, report.error
    assert (report.recreated, report.overwritten) == (0, 1)
    assert dict(world.pushed_counts()) == {"A-1": 1, "A-2": 1, "A-3": 1}
    event = world.pushed()["A-2"]
    assert event.id == moved
    assert event.start == appointments[1].start.astimezone(UTC)
    assert (await world.sync(enrollment)).writes == 0


async def test_a_pushed_event_deleted_in_outlook_is_still_re_created(world: World) -> None:
    """The read that saves a moved event must not stop a deleted one from coming back."""
    enrollment = await world.enroll()
    await world.source.upsert("P-1", [world.appointment(n, days=n) for n in range(1, 3)])
    await world.sync(enrollment)
    mailbox = world.user_id("avery.quinlan@example.edu")
    gone = (await links_of(world, enrollment))["A-1"]
    await world.m365.graph.request("DELETE", f"users/{mailbox}/events/{gone}", mailbox=mailbox)

    report = await world.sync(enrollment)

    assert report.recreated == 1
    assert dict(world.pushed_counts()) == {"A-1": 1, "A-2": 1}


@pytest.mark.parametrize("answer", ["error", "error_without_id", "conflict", "replay"])
async def test_a_crash_between_create_and_link_leaves_one_event_and_one_link(
    world: World, monkeypatch: pytest.MonkeyPatch, answer: str
) -> None:
    """The next run repeats the creates with the same ``transactionId``; whichever way Graph
    answers, the existing event is adopted, linked once, brought to today's content, and never
    read back as the person's own busy time."""
    world.tenant.set_knobs(duplicate_transaction=answer)
    enrollment = await world.enroll()
    await world.source.upsert("P-1", [world.appointment(n, days=n) for n in range(1, 4)])

    async def die(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the process died before it could record what it wrote")

    with monkeypatch.context() as patched:
        patched.setattr(SyncEngine, "_commit", die)
        with pytest.raises(RuntimeError):
            await world.sync(enrollment)
    assert dict(world.pushed_counts()) == {"A-1": 1, "A-2": 1, "A-3": 1}
    assert await links_of(world, enrollment) == {}
    await world.source.upsert("P-1", [world.appointment(2, days=2, subject="Client 2, moved")])

    report = await world.sync(enrollment)

    assert report.ok, report.error
    # A replayed 201 looks like a fresh create unless the content differs: only A-2 does.
    assert report.adopted == (1 if answer == "replay" else 3)
    assert dict(world.pushed_counts()) == {"A-1": 1, "A-2": 1, "A-3": 1}
    links = await links_of(world, enrollment)
    assert links == {sid: event.id for sid, event in world.pushed().items()}
    assert world.pushed()["A-2"].subject == "Client 2, moved"
    assert not set(links.values()) & await busy_event_ids(world, enrollment)
    assert (await world.sync(enrollment)).writes == 0


async def test_a_create_repeated_without_a_crash_is_not_adopted(world: World) -> None:
    """The comparison that catches a replayed create does not fire on an ordinary one."""
    world.tenant.set_knobs(duplicate_transaction="replay")
    enrollment = await world.enroll()
    await world.source.upsert("P-1", [world.appointment(1, days=1)])
    report = await world.sync(enrollment)
    assert (report.created, report.adopted) == (1, 0)
    assert [r.method for r in world.tenant.requests if r.in_batch] == ["POST"]


@pytest.mark.parametrize("answer", ["error", "error_without_id", "conflict", "replay"])
async def test_an_appointment_cancelled_and_restored_twice_comes_back_once(
    world: World, answer: str
) -> None:
    """Its link is gone with the deleted event, so the restored appointment's create repeats a
    transaction id whose event was deleted. Graph may keep such an id (not published; the
    sandbox keeps it): the engine moves on to the next generation's id, in the same run."""
    world.tenant.set_knobs(duplicate_transaction=answer)
    enrollment = await world.enroll()
    kept = world.appointment(2, days=2)
    await world.source.upsert("P-1", [world.appointment(1, days=1), kept])
    assert (await world.sync(enrollment)).created == 2
    for _ in range(2):
        await world.source.upsert("P-1", [world.appointment(1, days=1, cancelled=True)])
        assert (await world.sync(enrollment)).deleted == 1
        await world.source.upsert("P-1", [world.appointment(1, days=1)])

        report = await world.sync(enrollment)

        assert report.ok, report.error
        assert (report.created, report.failed_writes) == (1, 0)
        assert dict(world.pushed_counts()) == {"A-1": 1, "A-2": 1}
    assert (await world.sync(enrollment)).writes == 0
