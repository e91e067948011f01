"""What the use cases answer: plain values a caller (the bot, the CLI) shows to a person.

Every refusal is one of these with words a person can act on, never an exception that reaches
the user.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from syncwarden.connectors.ports import DirectoryUser
from syncwarden.connectors.scheduling.ports import Profile
from syncwarden.workflows.ports import TicketView


@dataclass(frozen=True)
class RequestProblem:
    """Why a request cannot become a ticket; ``field`` names the input to correct."""

    field: str
    message: str


@dataclass(frozen=True)
class EnrollmentForm:
    """What the request card shows before anything is submitted."""

    subject: DirectoryUser | None
    addresses: tuple[str, ...] = ()
    primary: str = ""
    profiles: tuple[Profile, ...] = ()
    problems: tuple[RequestProblem, ...] = ()
    existing: TicketView | None = None
    message: str = ""


@dataclass(frozen=True)
class OpenRequest:
    """A person's open ticket as their status names it: its number, kind and status."""

    ref: str
    kind: str
    status: str


@dataclass(frozen=True)
class PersonStatus:
    open_ticket: OpenRequest | None
    enrolled_mailbox: str | None
    last_sync_at: datetime | None
    last_error: str | None
    last_sync_summary: str | None = None
    # Time-bound access: when it ends (None: never).
    access_until: datetime | None = None


@dataclass(frozen=True)
class EnrollmentView:
    """One row of the users-to-sync registry."""

    subject_id: str
    name: str
    upn: str
    mailbox: str
    paused: bool
    last_success_at: datetime | None
    last_error: str | None
    last_error_kind: str | None = None
    last_sync_summary: str | None = None


@dataclass(frozen=True)
class RequestResult:
    ticket: TicketView | None = None
    created: bool = False
    problems: tuple[RequestProblem, ...] = ()
    profile_candidates: tuple[Profile, ...] = ()
    message: str = ""

    @property
    def ok(self) -> bool:
        """A ticket (new or already open) answers the request, and nothing is wrong with it."""
        return self.ticket is not None and not self.problems


class ActionOutcome(StrEnum):
    DONE = "done"
    NOT_FOUND = "not_found"
    NOT_ALLOWED = "not_allowed"
    ALREADY_DECIDED = "already_decided"
    STALE = "stale"
    INVALID = "invalid"


@dataclass(frozen=True)
class ActionResult:
    outcome: ActionOutcome
    message: str
    ticket: TicketView | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is ActionOutcome.DONE
