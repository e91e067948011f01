"""What time does to undecided requests: remind the approvers, escalate, and finally expire.

Run often by the scheduler; each pass is one unit of work over the waiting tickets (rows locked),
and each reminder or escalation is stamped on the ticket in the same commit as its messages, so
running it twice at once, or again after a crash, sends nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select

from syncwarden.core.settings import ApprovalSettings
from syncwarden.workflows.announcements import ask_for_approval, show_in_approvals_channel
from syncwarden.workflows.model import TicketEvent, TicketStatus
from syncwarden.workflows.ports import NotificationKind, Person
from syncwarden.workflows.queries import with_children
from syncwarden.workflows.records import Ticket
from syncwarden.workflows.roster import Roster
from syncwarden.workflows.transitions import move
from syncwarden.workflows.unit_of_work import UnitsOfWork

SYSTEM = Person("system", "Syncwarden")


class ApprovalClock:
    def __init__(
        self,
        units: UnitsOfWork,
        *,
        roster: Roster,
        approvals: ApprovalSettings,
        clock: Callable[[], datetime],
    ) -> None:
        self._units = units
        self._roster = roster
        self._approvals = approvals
        self._clock = clock

    async def show_waiting_in_channel(self, channel_key: str) -> int:
        """Post every request still waiting for a decision to a newly named approvals channel.

        Requests asked before any approvals channel was named were only sent to the approvers'
        chats; a channel named now would otherwise stay empty until the next request. Returns
        how many were queued.
        """
        approvers = await self._roster.approvers()
        fallback = await self._roster.fallback_approvers()
        async with self._units() as work:
            rows = await work.session.scalars(
                with_children(select(Ticket))
                .where(Ticket.status == TicketStatus.AWAITING_APPROVAL.value)
                .order_by(Ticket.id)
            )
            waiting = rows.all()
            for ticket in waiting:
                # An escalated request may be decided by the fallback approvers as well.
                deciders = approvers | fallback if ticket.escalated_at else approvers
                show_in_approvals_channel(work, ticket, deciders, channel_key)
            return len(waiting)

    async def check_pending(self) -> dict[str, int]:
        """Remind, escalate and expire undecided requests; safe to run often and twice at once."""
        now = self._clock()
        counts = {"reminded": 0, "escalated": 0, "expired": 0}
        approvers = await self._roster.approvers()
        fallback = await self._roster.fallback_approvers()
        async with self._units() as work:
            rows = await work.session.scalars(
                with_children(select(Ticket))
                .where(Ticket.status == TicketStatus.AWAITING_APPROVAL.value)
                .with_for_update()
            )
            for ticket in rows.all():
                age = now - ticket.created_at
                if age >= timedelta(days=self._approvals.expiry_days):
                    move(work, ticket, TicketEvent.EXPIRE, SYSTEM, now=now)
                    counts["expired"] += 1
                    continue
                if ticket.escalated_at is None and age >= timedelta(
                    hours=self._approvals.escalation_hours
                ):
                    ticket.escalated_at = now
                    ask_for_approval(
                        work, ticket, fallback or approvers, NotificationKind.APPROVAL_ESCALATED
                    )
                    work.audit(
                        actor="system",
                        action="ticket.escalated",
                        ticket_ref=ticket.ref,
                    )
                    counts["escalated"] += 1
                elif ticket.reminded_at is None and age >= timedelta(
                    hours=self._approvals.reminder_hours
                ):
                    ticket.reminded_at = now
                    ask_for_approval(work, ticket, approvers, NotificationKind.APPROVAL_REMINDER)
                    work.audit(
                        actor="system",
                        action="ticket.reminded",
                        ticket_ref=ticket.ref,
                    )
                    counts["reminded"] += 1
        return counts
