"""What the workflow needs from the outside, as protocols the composition root fills in.

The :class:`Notifier` is how tickets reach people in Teams. The workflow decides *who* hears
*what* (a :class:`Notification` with a snapshot of the ticket); the bot decides how it looks.
Every send carries a ``key`` that is stable for that notification, so an implementation with a
durable outbox can drop a repeat after a crash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol


@dataclass(frozen=True)
class Person:
    """Someone acting on a ticket, identified by their Entra object id (never by a name)."""

    id: str
    name: str
    upn: str = ""


@dataclass(frozen=True)
class DecisionView:
    approver_name: str
    approve: bool
    comment: str
    decided_at: datetime


@dataclass(frozen=True)
class TicketView:
    """A read-only snapshot of a ticket, safe to hand out after the transaction ended."""

    ref: str
    kind: str
    status: str
    version: int
    subject: Person
    subject_mail: str
    requester: Person
    mailbox: str
    previous_mailbox: str | None
    profile_id: str | None
    profile_name: str | None
    justification: str
    created_at: datetime
    decisions: tuple[DecisionView, ...] = ()
    failure_reason: str | None = None
    waiting_step: str | None = None
    # Time-bound access: when the access asked for ends (enroll and extend tickets).
    access_until: datetime | None = None


class NotificationKind(StrEnum):
    APPROVAL_REQUESTED = "approval_requested"
    APPROVAL_REMINDER = "approval_reminder"
    APPROVAL_ESCALATED = "approval_escalated"
    RECEIVED = "received"
    APPROVED = "approved"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    COMPLETED = "completed"
    FAILED = "failed"
    MANUAL_STEP = "manual_step"
    INSTRUCTIONS = "instructions"
    STATUS = "status"
    CREDENTIAL_ALERT = "credential_alert"
    CREDENTIAL_RESOLVED = "credential_resolved"
    SYNC_ALERT = "sync_alert"
    SYNC_RECOVERED = "sync_recovered"
    DELIVERY_FAILED = "delivery_failed"
    DRIFT_REPORT = "drift_report"
    ACCESS_ENDING = "access_ending"
    ACCESS_ENDED = "access_ended"
    REVIEW_REQUESTED = "review_requested"
    REVIEW_REMINDER = "review_reminder"
    REVIEW_CLOSED = "review_closed"


class Channel(StrEnum):
    IT = "it"
    APPROVALS = "approvals"


@dataclass(frozen=True)
class Notification:
    """Something to tell people; about a ticket, or (credential alerts) about nothing of ours."""

    kind: NotificationKind
    ticket: TicketView | None
    text: str
    details: dict[str, str] = field(default_factory=dict)

    def require_ticket(self) -> TicketView:
        if self.ticket is None:
            raise ValueError(f"a {self.kind.value} notification needs its ticket")
        return self.ticket


class DeliveryDeferredError(Exception):
    """The channel did not take the message this time (busy, unreachable); the outbox retries.

    An expected failure: logged as a warning. Anything else a delivery raises is unexpected and
    is logged with its traceback. ``retry_after`` (seconds), when the channel said how long to
    wait, becomes the row's next attempt time instead of a wait inside the delivery.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeliveryPostponedError(DeliveryDeferredError):
    """Nothing was sent: the conversation's send budget is spent for ``retry_after`` seconds.

    Not a failure, so it costs the message none of its attempts: a backlog of alerts to one
    busy channel waits its turn instead of using up its retries and being given up on.
    """

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, retry_after=retry_after)
        self.wait_seconds = retry_after


class UndeliverableError(Exception):
    """The message can never be delivered as addressed (no chat with that person, bot blocked,
    no channel configured); retrying would not help, so the outbox gives up on it at once."""


class Notifier(Protocol):
    async def to_user(self, user_id: str, notification: Notification, *, key: str) -> None: ...

    async def to_channel(
        self, channel: Channel, notification: Notification, *, key: str
    ) -> None: ...

    async def update_card(self, ticket: TicketView, *, key: str) -> None:
        """Refresh every posted copy of the ticket's approval card to show its current state."""
        ...
