"""Adopting events an interrupted run already created, instead of failing or duplicating them.

A run that stops between a create and the commit of its link repeats the create next time with
the same ``transactionId``. Graph's answer to that is not published: client code and issue
reports show 400 (sometimes 409) ``ErrorDuplicateTransactionId``, with the existing event's id in
``@event.existingEventId`` or without it; an identical retry may instead get the first event back
as it was then. Each answer ends here: the existing event is found (by the id, or by our tag),
brought to the content wanted today, and handed back to be linked. When that event has been
deleted since (Graph may keep a transaction id after its event is gone), the adoption is handed
back as *gone*, for the engine to create it afresh under the next generation's id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from syncwarden.connectors.errors import ConnectorError
from syncwarden.connectors.graph.calendar import GraphCalendar, update_request
from syncwarden.sync.event_payload import graph_instant
from syncwarden.sync.plan import Desired, LinkView


@dataclass(frozen=True)
class Adoption:
    """A create whose event already existed; ``event_id`` is None when Graph did not say."""

    kind: str
    desired: Desired
    link: LinkView | None
    event_id: str | None
    transaction_id: str
    generation: int


@dataclass(frozen=True)
class Adopted:
    adoption: Adoption
    event: dict[str, Any] | None  # as it is after being brought up to date; None if that failed
    error: ConnectorError | None = None


@dataclass(frozen=True)
class AdoptionRound:
    adopted: list[Adopted]
    gone: list[Adoption]
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
        and _same_instant(event.get("start"), payload.get("start"))
        and _same_instant(event.get("end"), payload.get("end"))
    )


def _same_instant(echoed: Any, sent: Any) -> bool:
    """Whether Graph's ``dateTimeTimeZone`` is the one we sent.

    Graph echoes a time as sent, in the same zone, with a seven-digit fraction added
    (``09:00:00`` comes back as ``09:00:00.0000000``); that case, nearly every create, is
    told by comparing text, and anything else by parsing both (every create is checked).
    """
    if isinstance(echoed, dict) and isinstance(sent, dict):
        text, mine = echoed.get("dateTime"), sent.get("dateTime")
        if (
            isinstance(text, str)
            and isinstance(mine, str)
            and echoed.get("timeZone") == sent.get("timeZone")
            and text.startswith(mine)
            and text[len(mine) :].rstrip("0") in ("", ".")
        ):
            return True
    return graph_instant(echoed) == graph_instant(sent)


async def adopt(calendar: GraphCalendar, mailbox: str, adoptions: list[Adoption]) -> AdoptionRound:
    """Find each adopted event and write today's content over it.

    Without an id from Graph, the event is the one tagged with the appointment *and* holding
    this very transaction id: other tagged events may belong to another enrollment on the same
    mailbox, so nothing else is touched.
    """
    requests = 0
    targets: list[tuple[Adoption, str]] = []
    gone: list[Adoption] = []
    for adoption in adoptions:
        event_id = adoption.event_id
        if event_id is None:
            tagged = await calendar.find_by_source_id(mailbox, adoption.desired.appointment.id)
            requests += 1
            holders = sorted(
                str(event["id"])
                for event in tagged
                if event.get("id") and event.get("transactionId") == adoption.transaction_id
            )
            if not holders:
                gone.append(adoption)
                continue
            event_id = holders[0]
        targets.append((adoption, event_id))
    writes = [
        update_request(f"a{index}", mailbox, event_id, adoption.desired.payload)
        for index, (adoption, event_id) in enumerate(targets)
    ]
    if not writes:
        return AdoptionRound([], gone, requests)
    results = await calendar.write_batch(mailbox, writes)
    requests += -(-len(writes) // 20)
    adopted: list[Adopted] = []
    for (adoption, _), result in zip(targets, results, strict=True):
        if result.status == 404:
            gone.append(adoption)
        else:
            event = result.body if result.ok and isinstance(result.body, dict) else None
            adopted.append(Adopted(adoption, event, result.error))
    return AdoptionRound(adopted, gone, requests)
