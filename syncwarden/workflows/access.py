"""Who may read a ticket: the same care for every read as for every write.

A ticket names a person, their mailbox, why they asked and who decided what, so it is shown only
to the people it concerns:

- its **subject** (the person it is about),
- its **requester**,
- **approvers** (the configured approvers, fallback approvers included, who may be asked to
  decide it),
- **IT admins**.

Nobody else learns anything about it, not even whether it exists. Everything here is pure: the
caller resolves the reader's roles (from the roster, by Entra object id) and asks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from syncwarden.workflows.ports import TicketView

CANNOT_SEE = "You can't see that ticket."


class Role(StrEnum):
    """A standing role that lets its holder read every ticket."""

    APPROVER = "approver"
    IT_ADMIN = "it_admin"


class ReadGrant(StrEnum):
    """Why a reader may read a ticket (the first that applies, in this order)."""

    IT_ADMIN = "it_admin"
    APPROVER = "approver"
    SUBJECT = "subject"
    REQUESTER = "requester"


@dataclass(frozen=True)
class Reader:
    """Someone asking to read: their Entra object id and the roles the roster gives them."""

    id: str
    roles: frozenset[Role] = frozenset()

    @property
    def reads_every_ticket(self) -> bool:
        """IT admins and approvers may read any ticket, so telling them one is unknown is fine."""
        return bool(self.roles)


def read_grant(ticket: TicketView, reader: Reader) -> ReadGrant | None:
    """Why ``reader`` may read ``ticket``, or None when they may not."""
    if Role.IT_ADMIN in reader.roles:
        return ReadGrant.IT_ADMIN
    if Role.APPROVER in reader.roles:
        return ReadGrant.APPROVER
    who = reader.id.strip().lower()
    if not who:
        return None
    if who == ticket.subject.id.strip().lower():
        return ReadGrant.SUBJECT
    if who == ticket.requester.id.strip().lower():
        return ReadGrant.REQUESTER
    return None


def may_read(ticket: TicketView, reader: Reader) -> bool:
    return read_grant(ticket, reader) is not None


def readable(tickets: Iterable[TicketView], reader: Reader) -> list[TicketView]:
    """The tickets ``reader`` may read, in their order."""
    return [ticket for ticket in tickets if may_read(ticket, reader)]
