"""Deciding what to write: the source's appointments against our links and what Outlook says.

Pure functions on plain data, so every rule (what counts as changed, when a deletion made in
Outlook is undone, when a link is simply forgotten) is tested without a tenant. The engine feeds
it and carries it out.

The scheduling system owns pushed events: an edit made in Outlook is overwritten, a deletion
made in Outlook is undone by creating the event again. Links for appointments that have slid out
of the back of the window are forgotten without touching the event, so the passage of time never
deletes anything.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from typing import Any

from syncwarden.connectors.scheduling.ports import Appointment, Window
from syncwarden.sync.event_payload import PAYLOAD_VERSION, content_hash, event_payload

# A link whose Outlook event is known to be gone (a PATCH answered 404) carries this change key.
MISSING = "!missing"
# Bump when what the plan reads from the source changes, so no stored fingerprint matches.
FINGERPRINT_VERSION = "1"
# A link whose event a delta round reported under ``@removed``. Graph uses ``@removed`` both for
# a deletion and for a change that took the event outside the round's window, so this one is
# only a suspicion: the engine reads the event before it re-creates anything.
REMOVED = "!removed"


@dataclass(frozen=True)
class LinkView:
    source_id: str
    event_id: str
    content_hash: str
    change_key: str | None
    generation: int
    starts_at: datetime
    ends_at: datetime


@dataclass(frozen=True)
class OutlookView:
    """What one delta round said about the events in the window.

    ``full`` means the round listed every event (a first round or a resync), so a linked event
    that is not listed is gone; otherwise only ``removed`` ids are gone.
    """

    change_keys: Mapping[str, str | None]
    removed: frozenset[str] = frozenset()
    full: bool = False
    window: Window | None = None

    def is_gone(self, link: LinkView) -> bool:
        """Whether the event looks gone; only a MISSING mark is certain (see ``unconfirmed``)."""
        if link.change_key in (MISSING, REMOVED) or link.event_id in self.removed:
            return True
        if not self.full or link.event_id in self.change_keys:
            return False
        return self.window is None or self.window.overlaps(link.starts_at, link.ends_at)

    def edited_elsewhere(self, link: LinkView) -> bool:
        if link.event_id not in self.change_keys:
            return False
        seen = self.change_keys[link.event_id]
        return seen is not None and seen != link.change_key


@dataclass(frozen=True)
class Desired:
    appointment: Appointment
    payload: dict[str, Any]
    content_hash: str


@dataclass
class Plan:
    creates: list[Desired] = field(default_factory=list)
    recreates: list[tuple[Desired, LinkView]] = field(default_factory=list)
    updates: list[tuple[Desired, LinkView]] = field(default_factory=list)
    overwrites: int = 0
    deletes: list[LinkView] = field(default_factory=list)
    forget: list[LinkView] = field(default_factory=list)
    unchanged: int = 0
    deferred: int = 0

    def unconfirmed(self, window: Window) -> list[LinkView]:
        """Links taken for gone on delta's word alone: their events may only have moved away.

        A full round lists only the window, and ``@removed`` also means "changed outside the
        window", so a person who drags a pushed event to next year looks exactly like one who
        deleted it. Re-creating it would leave two; these must be read first.
        """
        suspects = [link for _, link in self.recreates if link.change_key != MISSING]
        suspects += [
            link
            for link in self.forget
            if link.ends_at > window.start and link.change_key != MISSING
        ]
        return suspects

    def confirm(self, still_there: set[str]) -> None:
        """Put events that ``unconfirmed`` suspected but that still exist back where they belong.

        A wanted one is written back over (the scheduling system owns it); an unwanted one is
        deleted, as it would have been had it stayed in the window.
        """
        recreates = []
        for desired, link in self.recreates:
            if link.event_id in still_there and link.change_key != MISSING:
                self.updates.append((desired, link))
                self.overwrites += 1
            else:
                recreates.append((desired, link))
        self.recreates = recreates
        forget = []
        for link in self.forget:
            if link.event_id in still_there and link.change_key != MISSING:
                self.deletes.append(link)
            else:
                forget.append(link)
        self.forget = forget

    def cap_creations(self, limit: int) -> None:
        """Keep at most ``limit`` creations (soonest first); the rest wait for the next run."""
        total = len(self.creates) + len(self.recreates)
        if total <= limit:
            return
        self.creates.sort(key=lambda d: d.appointment.start)
        self.recreates.sort(key=lambda pair: pair[0].appointment.start)
        keep_recreates = self.recreates[:limit]
        keep_creates = self.creates[: max(0, limit - len(keep_recreates))]
        self.deferred = total - len(keep_recreates) - len(keep_creates)
        self.recreates, self.creates = keep_recreates, keep_creates


def desired_events(
    appointments: Iterable[Appointment], window: Window, subject_template: str
) -> dict[str, Desired]:
    """What should be in Outlook: live appointments in the window, the last copy of any id."""
    wanted: dict[str, Desired] = {}
    for appointment in appointments:
        if appointment.cancelled or not window.overlaps(appointment.start, appointment.end):
            wanted.pop(appointment.id, None)
            continue
        payload = event_payload(appointment, subject_template)
        wanted[appointment.id] = Desired(appointment, payload, content_hash(payload))
    return wanted


def plan_changes(
    wanted: Mapping[str, Desired],
    links: Sequence[LinkView],
    outlook: OutlookView,
    window: Window,
) -> Plan:
    plan = Plan()
    linked = {link.source_id: link for link in links}
    for source_id, desired in wanted.items():
        link = linked.get(source_id)
        if link is None:
            plan.creates.append(desired)
        elif outlook.is_gone(link):
            plan.recreates.append((desired, link))
        elif desired.content_hash != link.content_hash:
            plan.updates.append((desired, link))
        elif outlook.edited_elsewhere(link):
            plan.updates.append((desired, link))
            plan.overwrites += 1
        else:
            plan.unchanged += 1
    for source_id, link in linked.items():
        if source_id in wanted:
            continue
        if link.ends_at <= window.start or outlook.is_gone(link):
            plan.forget.append(link)
        else:
            plan.deletes.append(link)
    return plan


def deletion_share(plan: Plan, links: Sequence[LinkView]) -> float:
    return len(plan.deletes) / len(links) if links else 0.0


def source_fingerprint(
    appointments: Sequence[Appointment],
    window: Window,
    *,
    subject_template: str,
    profile_id: str,
    mailbox: str,
) -> str:
    """Everything the plan takes from outside our links, in one hash: the source's read, the
    window it was read for, the mapping and how payloads are shaped.

    Equal to the hash stored by a run that left Outlook exactly as planned, and with a delta
    round that saw nothing, it proves the plan would be empty, so the engine can skip it (and
    the links it would load). Only what the plan uses goes in: ``updated_at`` does not (a feed
    that restamps every read would never look unchanged), and no location is the same as an
    empty one, as in the payload. Sorted by id, stably, so a source that returns rows in another
    order still matches, while repeats of one id keep their order (the last copy wins in
    :func:`desired_events`). JSON keeps fields apart whatever text they hold.
    """
    head = _context(
        window, subject_template=subject_template, profile_id=profile_id, mailbox=mailbox
    )
    rows = [
        (
            a.id,
            a.subject,
            a.start.timestamp(),
            a.end.timestamp(),
            a.time_zone,
            a.all_day,
            a.location or "",
            a.cancelled,
        )
        for a in sorted(appointments, key=attrgetter("id"))
    ]
    text = json.dumps([head, rows], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def source_marker(
    marker: str, window: Window, *, subject_template: str, profile_id: str, mailbox: str
) -> str:
    """The source's change marker (:class:`connectors.scheduling.ports.ChangeMarkers`) with the
    rest of what :func:`source_fingerprint` hashes besides the read, in one hash.

    Stored beside the fingerprint of a read made after the marker was read: the same value
    later says the source still holds what that read returned, and the window, mapping and
    payload shape are the same, so the fingerprint would match without reading anything.
    """
    head = _context(
        window, subject_template=subject_template, profile_id=profile_id, mailbox=mailbox
    )
    text = json.dumps([head, marker], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _context(
    window: Window, *, subject_template: str, profile_id: str, mailbox: str
) -> list[str | float]:
    head: list[str | float] = [FINGERPRINT_VERSION, PAYLOAD_VERSION, profile_id, mailbox]
    head += [subject_template, window.start.timestamp(), window.end.timestamp()]
    return head
