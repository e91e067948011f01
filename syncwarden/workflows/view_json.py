"""A :class:`TicketView` as plain JSON and back, for rows that keep a snapshot of a ticket.

The outbox stores the view each notification was rendered from, and the bot keeps the newest
view its cards have shown; both must read back exactly what they wrote (datetimes included).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from syncwarden.workflows.ports import DecisionView, Person, TicketView


def ticket_to_json(ticket: TicketView) -> dict[str, Any]:
    data = asdict(ticket)
    data["created_at"] = ticket.created_at.isoformat()
    data["decisions"] = [
        {**asdict(d), "decided_at": d.decided_at.isoformat()} for d in ticket.decisions
    ]
    return data


def ticket_from_json(data: dict[str, Any]) -> TicketView:
    return TicketView(
        **{
            **data,
            "subject": Person(**data["subject"]),
            "requester": Person(**data["requester"]),
            "created_at": datetime.fromisoformat(data["created_at"]),
            "decisions": tuple(
                DecisionView(**{**d, "decided_at": datetime.fromisoformat(d["decided_at"])})
                for d in data.get("decisions", [])
            ),
        }
    )
