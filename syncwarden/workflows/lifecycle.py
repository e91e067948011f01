"""Moving a ticket record through the transition table, with its audit row.

Both the use cases (a person decides, cancels, retries) and the runner (a step finished or failed)
change tickets; this is the one place that applies an event to a stored ticket, so the version,
timestamps and audit trail follow the same rules whoever moved it.
"""

from __future__ import annotations

from datetime import datetime

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
    before = ticket.ticket_status
    after = next_status(before, event)
    ticket.status = after.value
    ticket.version += 1
    ticket.updated_at = now
    if event in (TicketEvent.APPROVE, TicketEvent.REJECT):
        ticket.decided_at = now
    if not after.is_open:
        ticket.closed_at = now
    record_audit(
        session,
        actor=actor,
        action=f"ticket.{event.value}",
        ticket_ref=ticket.ref,
        before={"status": before.value},
        after={"status": after.value, **({"note": note.strip()[:500]} if note.strip() else {})},
    )
    return after
