"""A :class:`TicketView` as plain JSON and back, for rows that keep a snapshot of a ticket.

The outbox stores the view each notification was rendered from, and the bot keeps the newest
view its cards have shown; both must read back exactly what they wrote (datetimes included).

A decision writes several messages about one ticket, each with its own copy of the view, so the
copy is made field by field: the view is frozen and its fields are text, numbers, datetimes and
small frozen dataclasses, so nothing needs :func:`dataclasses.asdict`'s deep copy of every value.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import Any

from syncwarden.workflows.ports import DecisionView, Person, TicketView

_TICKET_FIELDS = tuple(field.name for field in fields(TicketView))
_PERSON_FIELDS = tuple(field.name for field in fields(Person))
_DECISION_FIELDS = tuple(field.name for field in fields(DecisionView))


def _plain(value: Any, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(value, name) for name in names}


def ticket_to_json(ticket: TicketView) -> dict[str, Any]:
    data = _plain(ticket, _TICKET_FIELDS)
    data["subject"] = _plain(ticket.subject, _PERSON_FIELDS)
    data["requester"] = _plain(ticket.requester, _PERSON_FIELDS)
    data["created_at"] = ticket.created_at.isoformat()
    data["access_until"] = ticket.access_until.isoformat() if ticket.access_until else None
    data["decisions"] = [
        {**_plain(d, _DECISION_FIELDS), "decided_at": d.decided_at.isoformat()}
        for d in ticket.decisions
    ]
    return data


def ticket_from_json(data: dict[str, Any]) -> TicketView:
    return TicketView(
        **{
            **data,
            "subject": Person(**data["subject"]),
            "requester": Person(**data["requester"]),
            "created_at": datetime.fromisoformat(data["created_at"]),
            "access_until": (
                datetime.fromisoformat(data["access_until"]) if data.get("access_until") else None
            ),
            "decisions": tuple(
                DecisionView(**{**d, "decided_at": datetime.fromisoformat(d["decided_at"])})
                for d in data.get("decisions", [])
            ),
        }
    )
