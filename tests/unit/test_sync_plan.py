"""The sync planner's rules, on plain data: every appointment and every link lands in one place,
and the fingerprint that lets a quiet run skip planning sees everything planning reads."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncwarden.connectors.scheduling.ports import Appointment, Window
from syncwarden.sync.event_payload import content_hash, event_payload
from syncwarden.sync.plan import (
    MISSING,
    LinkView,
    OutlookView,
    desired_events,
    plan_changes,
    source_fingerprint,
)

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
WINDOW = Window(NOW - timedelta(days=14), NOW + timedelta(days=120))


def appointment(number: int, day: int, *, cancelled: bool = False) -> Appointment:
    start = NOW + timedelta(days=day)
    return Appointment(
        f"A-{number}", f"Client {number}", start, start + timedelta(hours=1), cancelled=cancelled
    )


def link_for(item: Appointment, *, event: str | None = None, stale: bool = False) -> LinkView:
    payload = event_payload(item, "{subject}")
    return LinkView(
        item.id,
        event or f"E-{item.id}",
        "old" if stale else content_hash(payload),
        "ck-1",
        0,
        item.start,
        item.end,
    )


def test_each_rule_of_the_planner() -> None:
    same, moved, gone_in_outlook, edited = (appointment(n, n) for n in range(1, 5))
    cancelled = appointment(5, 5, cancelled=True)
    aged = appointment(6, -30)
    new = appointment(7, 7)
    links = [
        link_for(same),
        link_for(moved, stale=True),
        link_for(gone_in_outlook),
        link_for(edited),
        link_for(cancelled),
        link_for(aged),
    ]
    outlook = OutlookView({"E-A-4": "ck-2", "E-A-1": "ck-1"}, frozenset({"E-A-3"}))
    wanted = desired_events(
        [same, moved, gone_in_outlook, edited, cancelled, new], WINDOW, "{subject}"
    )

    plan = plan_changes(wanted, links, outlook, WINDOW)

    assert [d.appointment.id for d in plan.creates] == ["A-7"]
    assert [link.source_id for _, link in plan.recreates] == ["A-3"]
    assert sorted(link.source_id for _, link in plan.updates) == ["A-2", "A-4"]
    assert plan.overwrites == 1
    assert [link.source_id for link in plan.deletes] == ["A-5"]
    assert [link.source_id for link in plan.forget] == ["A-6"]  # out of the window: not deleted
    assert plan.unchanged == 1


def test_a_full_round_treats_an_unlisted_pushed_event_as_deleted_in_outlook() -> None:
    item = appointment(1, 2)
    full = OutlookView({}, full=True, window=WINDOW)
    plan = plan_changes(desired_events([item], WINDOW, "x"), [link_for(item)], full, WINDOW)
    assert len(plan.recreates) == 1
    missing = LinkView(item.id, "E", "h", MISSING, 0, item.start, item.end)
    again = plan_changes(desired_events([item], WINDOW, "x"), [missing], OutlookView({}), WINDOW)
    assert len(again.recreates) == 1


@given(
    st.lists(st.tuples(st.integers(0, 30), st.integers(-40, 130), st.booleans()), max_size=30),
    st.sets(st.integers(0, 30), max_size=30),
    st.sets(st.integers(0, 30), max_size=10),
)
def test_every_appointment_and_link_is_accounted_for_once(
    rows: list[tuple[int, int, bool]], linked: set[int], removed: set[int]
) -> None:
    items = [appointment(n, day, cancelled=c) for n, day, c in rows]
    latest = {item.id: item for item in items}
    links = [link_for(latest.get(f"A-{n}") or appointment(n, 3)) for n in linked]
    outlook = OutlookView({}, frozenset(f"E-A-{n}" for n in removed))
    wanted = desired_events(items, WINDOW, "{subject}")

    plan = plan_changes(wanted, links, outlook, WINDOW)

    placed = (
        [d.appointment.id for d in plan.creates]
        + [d.appointment.id for d, _ in plan.recreates]
        + [d.appointment.id for d, _ in plan.updates]
    )
    assert len(placed) == len(set(placed))
    assert len(placed) + plan.unchanged == len(wanted)
    dropped = [link.source_id for link in plan.deletes + plan.forget]
    assert sorted(dropped) == sorted(
        link.source_id for link in links if link.source_id not in wanted
    )
    assert all(link.ends_at > WINDOW.start for link in plan.deletes)


def fingerprint(items: list[Appointment], **changes: Any) -> str:
    inputs: dict[str, Any] = {
        "window": WINDOW,
        "subject_template": "{subject}",
        "profile_id": "P-1",
        "mailbox": "m-1",
    }
    inputs.update(changes)
    window = inputs.pop("window")
    return source_fingerprint(items, window, **inputs)


CHANGES_THE_PLAN_SEES: list[tuple[str, dict[str, Any]]] = [
    ("subject", {"subject": "Client 1, renamed"}),
    ("start", {"start": NOW + timedelta(days=1, minutes=5)}),
    ("end", {"end": NOW + timedelta(days=1, hours=2)}),
    ("zone", {"time_zone": "Europe/London"}),
    ("all day", {"all_day": True}),
    ("location", {"location": "Room 4"}),
    ("cancelled", {"cancelled": True}),
    ("id", {"id": "A-1b"}),
]


@pytest.mark.parametrize(
    ("what", "change"), CHANGES_THE_PLAN_SEES, ids=[c[0] for c in CHANGES_THE_PLAN_SEES]
)
def test_the_source_fingerprint_changes_with_anything_the_plan_reads(
    what: str, change: dict[str, Any]
) -> None:
    items = [appointment(1, 1), appointment(2, 2)]
    changed = [replace(items[0], **change), items[1]]
    assert fingerprint(changed) != fingerprint(items), what


@pytest.mark.parametrize(
    "change",
    [
        {"window": Window(WINDOW.start, WINDOW.end + timedelta(days=1))},
        {"subject_template": "Booked"},
        {"profile_id": "P-2"},
        {"mailbox": "m-2"},
    ],
)
def test_the_source_fingerprint_changes_with_the_window_mapping_and_payload_shape(
    change: dict[str, Any],
) -> None:
    items = [appointment(1, 1)]
    assert fingerprint(items, **change) != fingerprint(items)


def test_an_appointment_added_or_dropped_changes_the_fingerprint() -> None:
    items = [appointment(1, 1), appointment(2, 2)]
    assert fingerprint(items[:1]) != fingerprint(items) != fingerprint([])


@given(st.permutations(list(range(8))), st.integers(0, 10_000))
def test_the_fingerprint_ignores_read_order_and_update_stamps(
    order: list[int], seconds: int
) -> None:
    items = [appointment(n, n) for n in range(8)]
    shuffled = [replace(items[i], updated_at=NOW + timedelta(seconds=seconds)) for i in order]
    assert fingerprint(shuffled) == fingerprint(items)


def test_text_cannot_move_between_fields_unseen() -> None:
    """A subject that ends with what looks like the next field is still another read."""
    plain = Appointment("A-1", "Client", NOW, NOW + timedelta(hours=1), time_zone="UTC")
    shifted = replace(plain, subject='Client","UTC', time_zone="")
    assert fingerprint([plain]) != fingerprint([shifted])
