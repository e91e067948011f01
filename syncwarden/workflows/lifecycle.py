"""Moving a ticket record through the transition table, with its audit row.

Both the use cases (a person decides, cancels, retries) and the runner (a step finished or failed)
change tickets; this is the one place that applies an event to a stored ticket, so the version,
timestamps and audit trail follow the same rules whoever moved it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from syncwarden.workflows.audit import record_audit
from syncwarden.workflows.model import TicketEvent, TicketStatus, next_status
from syncwarden.workflows.records import Ticket


def apply_event(
    session: AsyncSession,
    ticket: Ticket,
    event: TicketEvent,
    *,
    actor: str,
    now: datetime,
    note: str = "",
) -> TicketStatus:
    """Apply ``event`` (raising if the table forbids it), bump the version and audit it."""
    after, audit = change_status(ticket, event, actor=actor, now=now, note=note)
    record_audit(session, **audit)
    return after


def change_status(
    ticket: Ticket,
    event: TicketEvent,
    *,
    actor: str,
    now: datetime,
    note: str = "",
) -> tuple[TicketStatus, dict[str, Any]]:
    """Apply ``event`` to the ticket in memory; returns its new status and the audit row's values
    (:func:`workflows.audit.record_audit`'s arguments), for the caller to write."""
    before = ticket.ticket_status
    after = next_status(before, event)
    ticket.status = after.value
    ticket.version += 1
    ticket.updated_at = now
    if event in (TicketEvent.APPROVE, TicketEvent.REJECT):
        ticket.decided_at = now
    if not after.is_open:
        ticket.closed_at = now
    audit = {
        "actor": actor,
        "action": f"ticket.{event.value}",
        "ticket_ref": ticket.ref,
        "before": {"status": before.value},
        "after": {"status": after.value, **({"note": note.strip()[:500]} if note.strip() else {})},
    }
    return after, audit
