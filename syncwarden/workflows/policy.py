"""Who may change a ticket, decided by the actor's Entra object id, never by what a card says.

Pure functions: the caller resolves the actor's standing roles (from the roster) and asks. The
read side of the same question is :mod:`workflows.access`.
"""

from __future__ import annotations

from syncwarden.workflows.ports import Person
from syncwarden.workflows.records import Ticket


def approval_refusal(ticket: Ticket, approver: Person, eligible: frozenset[str]) -> str | None:
    """Why ``approver`` may not decide ``ticket`` (None: they may).

    ``eligible`` is the approvers' object ids, lower-cased, with the fallback approvers added
    once the ticket is escalated. Nobody decides a request about themselves or their own request,
    whatever group they are in.
    """
    who = approver.id.lower()
    if who == ticket.subject_id.lower():
        return "you cannot approve a request about yourself"
    if who == ticket.requester_id.lower():
        return "you cannot approve your own request"
    if who not in eligible:
        return "you are not an approver for calendar sync requests"
    return None


def cancel_refusal(ticket: Ticket, actor: Person, *, is_it_admin: bool) -> str | None:
    """The requester, the person it is about or IT may cancel a ticket that is not finished."""
    involved = actor.id.lower() in (ticket.requester_id.lower(), ticket.subject_id.lower())
    if involved or is_it_admin:
        return None
    return "only the requester, the person or IT can cancel it"
