"""A person's move of a ticket (approve, reject, cancel, expire, retry), announced in one go.

The status change, its audit row and the news of it are written on the same unit of work, so
they commit together. The runner's own moves (a step finished or failed) announce differently and
use :func:`workflows.lifecycle.apply_event` directly.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Table

from syncwarden.core.settings import ProvisioningSettings
from syncwarden.workflows.announcements import announce
from syncwarden.workflows.lifecycle import change_status
from syncwarden.workflows.model import TicketEvent
from syncwarden.workflows.ports import Person
from syncwarden.workflows.records import Step, Ticket
from syncwarden.workflows.steps import StepState, idempotency_key, plan
from syncwarden.workflows.unit_of_work import UnitOfWork


def move(
    work: UnitOfWork,
    ticket: Ticket,
    event: TicketEvent,
    actor: Person,
    *,
    now: datetime,
    comment: str = "",
) -> None:
    """Apply ``event`` (raising if the transition table forbids it) and queue who hears of it.

    The audit row goes with the work's commit as a plain row (:meth:`UnitOfWork.audit`), not
    as an ORM object to flush.
    """
    _, audit = change_status(ticket, event, actor=actor.upn or actor.id, now=now, note=comment)
    work.audit(**audit)
    announce(work, ticket, event, actor, comment)


def approve_and_start(
    work: UnitOfWork,
    ticket: Ticket,
    actor: Person,
    provisioning: ProvisioningSettings,
    *,
    now: datetime,
    comment: str = "",
) -> None:
    """Approved: the steps are queued in the same commit, so the runner finds them or nothing.

    They are written as plain rows in one ``INSERT`` (:meth:`UnitOfWork.insert`), not added to
    ``ticket.steps``: nothing in the decision reads them back, and the view of a ticket whose
    steps are all pending is the same without them.
    """
    move(work, ticket, TicketEvent.APPROVE, actor, now=now, comment=comment)
    names = plan(ticket.ticket_kind, remove_synced_events=provisioning.remove_synced_events)
    for position, name in enumerate(names, start=1):
        work.insert(
            _STEPS,
            {
                "ticket_id": ticket.id,
                "position": position,
                "name": name.value,
                "state": StepState.PENDING.value,
                "attempt": 0,
                "next_attempt_at": now,
                "idempotency_key": idempotency_key(ticket.ref, position, name),
                "params": {},
            },
        )
    move(work, ticket, TicketEvent.START, actor, now=now)


_STEPS: Table = Step.__table__  # type: ignore[assignment]
