"""Reading one delta round: which of our events changed or vanished, and the person's busy time.

Delta items cannot be expanded with our extended property, so our own events are recognised by
the event ids our links hold; everything else is the person's own calendar. Of those, only the
time and the free/busy status are kept (never subject, attendees or body), which is all the
scheduling system needs to avoid double-booking.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from syncwarden.connectors.scheduling.ports import BusyBlock, Window
from syncwarden.sync.event_payload import graph_instant
from syncwarden.sync.plan import OutlookView

NOT_BUSY = frozenset({"free", "unknown"})


@dataclass
class OutlookRead:
    view: OutlookView
    busy: dict[str, BusyBlock] = field(default_factory=dict)
    not_busy: set[str] = field(default_factory=set)


def read_delta(
    items: Iterable[Mapping[str, Any]],
    linked_event_ids: set[str],
    *,
    full: bool,
    window: Window | None,
) -> OutlookRead:
    change_keys: dict[str, str | None] = {}
    removed: set[str] = set()
    busy: dict[str, BusyBlock] = {}
    not_busy: set[str] = set()
    for item in items:
        event_id = str(item.get("id") or "")
        if not event_id:
            continue
        gone = "@removed" in item or bool(item.get("isCancelled"))
        if event_id in linked_event_ids:
            if gone:
                removed.add(event_id)
            else:
                change_keys[event_id] = item.get("changeKey")
            continue
        block = None if gone else _busy_block(item)
        if block is None:
            not_busy.add(event_id)
        else:
            busy[event_id] = block
    view = OutlookView(change_keys, frozenset(removed), full=full, window=window)
    return OutlookRead(view, busy, not_busy)


def _busy_block(item: Mapping[str, Any]) -> BusyBlock | None:
    if item.get("type") == "seriesMaster":
        return None
    show_as = str(item.get("showAs") or "busy")
    if show_as in NOT_BUSY:
        return None
    start, end = graph_instant(item.get("start")), graph_instant(item.get("end"))
    if start is None or end is None or end <= start:
        return None
    return BusyBlock(start, end, show_as)
