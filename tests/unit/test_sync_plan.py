"""The sync planner's rules, on plain data: every appointment and every link lands in one place."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from syncwarden.connectors.scheduling.ports import Appointment, Window
from syncwarden.sync.event_payload import content_hash, event_payload
from syncwarden.sync.plan import MISSING, LinkView, OutlookView, desired_events, plan_changes

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
