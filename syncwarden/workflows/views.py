"""Snapshots of tickets for notifications and for the bot, built inside the transaction."""

from __future__ import annotations

from syncwarden.workflows.ports import DecisionView, Person, TicketView
from syncwarden.workflows.records import Ticket
from syncwarden.workflows.steps import StepState


def ticket_view(ticket: Ticket) -> TicketView:
    waiting = next(
        (step.name for step in ticket.steps if step.state == StepState.WAITING_MANUAL.value), None
    )
    return TicketView(
        ref=ticket.ref,
        kind=ticket.kind,
        status=ticket.status,
        version=ticket.version,
        subject=Person(ticket.subject_id, ticket.subject_name, ticket.subject_upn),
        subject_mail=ticket.subject_mail,
        requester=Person(ticket.requester_id, ticket.requester_name, ticket.requester_upn),
        mailbox=ticket.mailbox,
        previous_mailbox=ticket.previous_mailbox,
        profile_id=ticket.profile_id,
        profile_name=ticket.profile_name,
        justification=ticket.justification,
        created_at=ticket.created_at,
        decisions=tuple(
            DecisionView(d.approver_name, d.approve, d.comment, d.decided_at)
            for d in ticket.decisions
        ),
        failure_reason=ticket.failure_reason,
        waiting_step=waiting,
        access_until=ticket.access_until,
    )
