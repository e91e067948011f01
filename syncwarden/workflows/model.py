"""The ticket's life cycle as one pure table: which event moves which status where.

Every status change in Syncwarden goes through :func:`next_status`, so the rules are in one place
and the table can be tested exhaustively (every status against every event). Anything not in the
table is illegal and raises :class:`IllegalTransitionError` with a sentence a person can act on.
"""

from __future__ import annotations

from enum import StrEnum

from syncwarden.core.errors import SyncwardenError


class TicketKind(StrEnum):
    ENROLL = "enroll"
    CHANGE = "change"
    REMOVE = "remove"
    # Time-bound access: a later end date for an enrollment, decided like a new request.
    EXTEND = "extend"
    # Repairs IT chooses on a drift finding: one step each, the enrollment otherwise untouched.
    READD = "readd"  # put an enrolled person back into the sync group
    REMAP = "remap"  # write an enrolled person's scheduling mapping again
    UNGROUP = "ungroup"  # take someone who is not enrolled out of the sync group


class TicketStatus(StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    PROVISIONING = "provisioning"
    WAITING_MANUAL = "waiting_manual"
    COMPLETED = "completed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    FAILED = "failed"

    @property
    def is_open(self) -> bool:
        """Open tickets still need someone (or the runner) to act."""
        return self not in FINAL_STATUSES

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


class TicketEvent(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    CANCEL = "cancel"
    EXPIRE = "expire"
    START = "start"
    WAIT_MANUAL = "wait_manual"
    MANUAL_DONE = "manual_done"
    COMPLETE = "complete"
    FAIL = "fail"
    RETRY = "retry"


FINAL_STATUSES = frozenset(
    {TicketStatus.COMPLETED, TicketStatus.REJECTED, TicketStatus.CANCELLED, TicketStatus.EXPIRED}
)

S, E = TicketStatus, TicketEvent
TRANSITIONS: dict[tuple[TicketStatus, TicketEvent], TicketStatus] = {
    (S.AWAITING_APPROVAL, E.APPROVE): S.APPROVED,
    (S.AWAITING_APPROVAL, E.REJECT): S.REJECTED,
    (S.AWAITING_APPROVAL, E.CANCEL): S.CANCELLED,
    (S.AWAITING_APPROVAL, E.EXPIRE): S.EXPIRED,
    (S.APPROVED, E.START): S.PROVISIONING,
    (S.APPROVED, E.CANCEL): S.CANCELLED,
    (S.PROVISIONING, E.WAIT_MANUAL): S.WAITING_MANUAL,
    (S.PROVISIONING, E.COMPLETE): S.COMPLETED,
    (S.PROVISIONING, E.FAIL): S.FAILED,
    (S.WAITING_MANUAL, E.MANUAL_DONE): S.PROVISIONING,
    (S.WAITING_MANUAL, E.CANCEL): S.CANCELLED,
    (S.FAILED, E.RETRY): S.PROVISIONING,
    (S.FAILED, E.CANCEL): S.CANCELLED,
}
del S, E


class IllegalTransitionError(SyncwardenError):
    """An action that does not apply to the ticket in its current status."""

    def __init__(self, status: TicketStatus, event: TicketEvent) -> None:
        self.status = status
        self.event = event
        super().__init__(f"a ticket that is {status.label} cannot be {_PAST[event]}")


_PAST = {
    TicketEvent.APPROVE: "approved",
    TicketEvent.REJECT: "rejected",
    TicketEvent.CANCEL: "cancelled",
    TicketEvent.EXPIRE: "expired",
    TicketEvent.START: "started",
    TicketEvent.WAIT_MANUAL: "put on hold for a manual step",
    TicketEvent.MANUAL_DONE: "resumed after a manual step",
    TicketEvent.COMPLETE: "completed",
    TicketEvent.FAIL: "failed",
    TicketEvent.RETRY: "retried",
}


def next_status(status: TicketStatus, event: TicketEvent) -> TicketStatus:
    """Where ``event`` takes a ticket in ``status``; raises when the table does not allow it."""
    try:
        return TRANSITIONS[(status, event)]
    except KeyError:
        raise IllegalTransitionError(status, event) from None


def allowed_events(status: TicketStatus) -> list[TicketEvent]:
    return [event for (source, event) in TRANSITIONS if source is status]
