"""Adopting events an interrupted run already created, instead of failing or duplicating them.

A run that stops between a create and the commit of its link repeats the create next time with
the same ``transactionId``. Graph's answer to that is not published: client code and issue
reports show 400 (sometimes 409) ``ErrorDuplicateTransactionId``, with the existing event's id in
``@event.existingEventId`` or without it; an identical retry may instead get the first event back
as it was then. Each answer ends here: the existing event is found (by the id, or by our tag),
brought to the content wanted today, and handed back to be linked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connectors.errors import ConnectorError
from connectors.graph.calendar import GraphCalendar, delete_request, update_request
from sync.event_payload import graph_instant
from sync.plan import Desired, LinkView


@dataclass(frozen=True)
class Adoption:
    """A create whose event already existed; ``event_id`` is None when Graph did not say."""

    kind: str
    desired: Desired
    link: LinkView | None
    event_id: str | None


@dataclass(frozen=True)
class Adopted:
    adoption: Adoption
    event: dict[str, Any] | None  # as it is after being brought up to date; None if that failed
    error: ConnectorError | None = None


@dataclass(frozen=True)
class AdoptionRound:
    adopted: list[Adopted]
    not_found: list[Adoption]
    requests: int


def same_content(payload: dict[str, Any], event: dict[str, Any]) -> bool:
    """Whether an event Graph returned holds what ``payload`` asks for (subject and times).

    A create repeated with its ``transactionId`` may be answered with the event as it was
    first created; if the appointment changed since, that event must still be updated.
    """
    if not event:
        return True
    return (
        event.get("subject") == payload.get("subject")
        and graph_instant(event.get("start")) == graph_instant(payload.get("start"))
        and graph_instant(event.get("end")) == graph_instant(payload.get("end"))
    )


async def adopt(
    calendar: GraphCalendar, mailbox: str, adoptions: list[Adoption]
) -> AdoptionRound:
    """Find each adopted event, write today's content over it, and delete tagged twins.

    Twins (two events tagged with the same appointment, left by older releases) are deleted so
    that one remains; the lowest id is kept, so a repeat of this round keeps the same one.
    """
    requests = 0
    targets: list[tuple[Adoption, str]] = []
    twins: list[str] = []
    not_found: list[Adoption] = []
    for adoption in adoptions:
        event_id = adoption.event_id
        if event_id is None:
            tagged = await calendar.find_by_source_id(mailbox, adoption.desired.appointment.id)
            requests += 1
            ids = sorted(str(event["id"]) for event in tagged if event.get("id"))
            if not ids:
                not_found.append(adoption)
                continue
            event_id, twins = ids[0], twins + ids[1:]
        targets.append((adoption, event_id))
    writes = [
        update_request(f"a{index}", mailbox, event_id, adoption.desired.payload)
        for index, (adoption, event_id) in enumerate(targets)
    ]
    writes += [delete_request(f"x{index}", mailbox, twin) for index, twin in enumerate(twins)]
    if not writes:
        return AdoptionRound([], not_found, requests)
    results = await calendar.write_batch(mailbox, writes)
    requests += -(-len(writes) // 20)
    adopted = [
        Adopted(
            adoption,
            result.body if result.ok and isinstance(result.body, dict) else None,
            result.error,
        )
        for (adoption, _), result in zip(targets, results, strict=False)
    ]
    return AdoptionRound(adopted, not_found, requests)
