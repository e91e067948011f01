"""Deciding and acting on tickets: approve, reject, cancel, retry, confirm a manual step.

Each command is one unit of work: the ticket row is locked, the actor is authorised by object id
(:mod:`workflows.policy`), the ticket moves through the transition table and the news of it is
queued in the same commit.

A click on a card is one of these, so the ticket is read with one statement built once
(:func:`_locked_ticket`; a decision's, as plain rows, :mod:`workflows.ticket_rows`) rather than
one for the ticket and one more per collection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload
from sqlalchemy.orm.attributes import get_history

from syncwarden.core.settings import ProvisioningSettings
from syncwarden.workflows.announcements import refresh_card
from syncwarden.workflows.model import IllegalTransitionError, TicketEvent, TicketKind, TicketStatus
from syncwarden.workflows.policy import approval_refusal, cancel_refusal
from syncwarden.workflows.ports import Person
from syncwarden.workflows.records import Decision, Enrollment, Ticket, ticket_id_from_ref
from syncwarden.workflows.results import ActionOutcome, ActionResult
from syncwarden.workflows.roster import Roster
from syncwarden.workflows.steps import StepState
from syncwarden.workflows.text import storable_text
from syncwarden.workflows.ticket_rows import locked_ticket, ticket_and_row_version
from syncwarden.workflows.transitions import approve_and_start, move
from syncwarden.workflows.unit_of_work import RowChangedError, UnitOfWork, UnitsOfWork
from syncwarden.workflows.views import ticket_view

Refusal = Callable[[Ticket], str | None]

# The ticket with its decisions and steps (a handful of rows, joined), its row locked until the
# transaction ends ("FOR UPDATE OF tickets": PostgreSQL locks no row on the nullable side of an
# outer join). Built once: building a statement costs more than SQLAlchemy's cached compile.
_LOCKED_TICKET = (
    select(Ticket)
    .options(joinedload(Ticket.decisions), joinedload(Ticket.steps))
    .where(Ticket.id == bindparam("ticket_id"))
    .with_for_update(of=Ticket)
)


async def _locked_ticket(session: AsyncSession, ticket_id: int) -> Ticket | None:
    """What ``queries.locked_ticket`` loads, in one round trip instead of three."""
    result = await session.execute(_LOCKED_TICKET, {"ticket_id": ticket_id})
    ticket: Ticket | None = result.unique().scalar_one_or_none()
    return ticket


async def _ticket_to_decide(work: UnitOfWork, ticket_id: int) -> tuple[Ticket | None, int | None]:
    """The ticket, locked, or, when ``work`` reads unlocked, with the version its row had."""
    if not work.reads_unlocked:
        return await locked_ticket(work.rows, ticket_id), None
    return await ticket_and_row_version(work.rows, ticket_id)


@dataclass(frozen=True)
class _Decision:
    """An approver's click as asked, and who the roster allowed to decide when it came."""

    ref: str
    ticket_id: int
    approver: Person
    allowed: frozenset[str]
    approve: bool
    comment: str
    version: int | None


def _not_a_ref(ref: str) -> ActionResult:
    return ActionResult(ActionOutcome.INVALID, f"'{ref}' is not a ticket number like SW-1042")


class TicketCommands:
    def __init__(
        self,
        units: UnitsOfWork,
        *,
        roster: Roster,
        provisioning: ProvisioningSettings,
        clock: Callable[[], datetime],
        on_steps_queued: Callable[[], None],
    ) -> None:
        self._units = units
        self._roster = roster
        self._provisioning = provisioning
        self._clock = clock
        self._on_steps_queued = on_steps_queued

    async def decide(
        self,
        ref: str,
        approver: Person,
        *,
        approve: bool,
        comment: str = "",
        version: int | None = None,
    ) -> ActionResult:
        """Record an approver's decision; authorised by the approver's object id only."""
        comment = storable_text(comment)
        ticket_id = ticket_id_from_ref(ref)
        if ticket_id is None:
            return _not_a_ref(ref)
        allowed = await self._roster.approvers()
        asked = _Decision(ref, ticket_id, approver, allowed, approve, comment, version)
        # Twice with no lock held (see UnitsOfWork.optimistic), then with the lock: a change by
        # someone else in between costs a second read, and a third try queues for the row
        # (PostgreSQL) or the write lock (SQLite) instead of racing again.
        for _ in range(2):
            try:
                return await self._decide_with(self._units.optimistic(), asked)
            except RowChangedError:
                continue
        return await self._decide_with(self._units(), asked)

    async def _decide_with(self, work: UnitOfWork, asked: _Decision) -> ActionResult:
        async with work:
            result = await self._decide_in(work, asked)
        started = result.ticket is not None and result.ticket.status == TicketStatus.PROVISIONING
        if result.outcome is ActionOutcome.DONE and started:
            self._on_steps_queued()
        return result

    async def _decide_in(self, work: UnitOfWork, asked: _Decision) -> ActionResult:
        ref, ticket_id, approver = asked.ref, asked.ticket_id, asked.approver
        approve, comment, version = asked.approve, asked.comment, asked.version
        ticket, row_version = await _ticket_to_decide(work, ticket_id)
        if ticket is None:
            return ActionResult(ActionOutcome.NOT_FOUND, f"there is no ticket {ref}")
        if ticket.ticket_status is not TicketStatus.AWAITING_APPROVAL:
            return ActionResult(
                ActionOutcome.ALREADY_DECIDED,
                f"{ticket.ref} is already {ticket.ticket_status.label}",
                ticket_view(ticket),
            )
        eligible = asked.allowed
        if ticket.escalated_at is not None:
            eligible = asked.allowed | await self._roster.fallback_approvers()
        refusal = approval_refusal(ticket, approver, eligible)
        if refusal:
            return ActionResult(ActionOutcome.NOT_ALLOWED, refusal, ticket_view(ticket))
        if version is not None and version != ticket.version:
            return ActionResult(
                ActionOutcome.STALE,
                f"{ticket.ref} changed since this card was sent; here is its current state",
                ticket_view(ticket),
            )
        if any(d.approver_id.lower() == approver.id.lower() for d in ticket.decisions):
            return ActionResult(
                ActionOutcome.ALREADY_DECIDED,
                "you have already decided on this ticket",
                ticket_view(ticket),
            )
        now = self._clock()
        # From here the ticket (never in the session: see ticket_rows) changes in memory only
        # and its rows are written by statement (_write_decision): the ORM's flush of the ticket
        # and its new decision cost more than the rest of the click.
        decision = Decision(
            approver_id=approver.id,
            approver_name=approver.name,
            approve=approve,
            comment=comment.strip(),
            decided_at=now,
        )
        ticket.decisions.append(decision)
        approvals = sum(1 for d in ticket.decisions if d.approve)
        if not approve:
            move(work, ticket, TicketEvent.REJECT, approver, now=now, comment=comment)
        elif approvals >= ticket.required_approvals:
            approve_and_start(work, ticket, approver, self._provisioning, now=now, comment=comment)
        else:
            ticket.version += 1
            work.audit(
                actor=approver.upn or approver.id,
                action="ticket.approval_recorded",
                ticket_ref=ticket.ref,
                after={"approvals": approvals, "required": ticket.required_approvals},
            )
        _write_decision(work, ticket, decision, row_version)
        view = ticket_view(ticket)
        refresh_card(work, view)
        verb = "approved" if approve else "rejected"
        return ActionResult(ActionOutcome.DONE, f"{view.ref} {verb}", view)

    async def cancel(self, ref: str, actor: Person, *, reason: str = "") -> ActionResult:
        """Requester, subject or an IT admin may cancel a ticket that is not finished."""
        reason = storable_text(reason)
        is_admin = await self._roster.is_it_admin(actor.id)
        return await self._act(
            ref,
            actor,
            TicketEvent.CANCEL,
            lambda ticket: cancel_refusal(ticket, actor, is_it_admin=is_admin),
            reason=reason,
        )

    async def retry(self, ref: str, actor: Person) -> ActionResult:
        """IT resumes a failed ticket from the step that failed."""
        if not await self._roster.is_it_admin(actor.id):
            return ActionResult(ActionOutcome.NOT_ALLOWED, "only IT admins can retry a ticket")
        result = await self._act(ref, actor, TicketEvent.RETRY, lambda _t: None)
        if result.ok:
            self._on_steps_queued()
        return result

    async def manual_step_done(self, ref: str, actor: Person) -> ActionResult:
        """IT confirms the manual step (values entered in the vendor's console)."""
        if not await self._roster.is_it_admin(actor.id):
            return ActionResult(
                ActionOutcome.NOT_ALLOWED, "only IT admins can complete a manual step"
            )
        result = await self._act(ref, actor, TicketEvent.MANUAL_DONE, lambda _t: None)
        if result.ok:
            self._on_steps_queued()
        return result

    async def _act(
        self, ref: str, actor: Person, event: TicketEvent, may: Refusal, *, reason: str = ""
    ) -> ActionResult:
        ticket_id = ticket_id_from_ref(ref)
        if ticket_id is None:
            return _not_a_ref(ref)
        async with self._units() as work:
            ticket = await _locked_ticket(work.session, ticket_id)
            if ticket is None:
                return ActionResult(ActionOutcome.NOT_FOUND, f"there is no ticket {ref}")
            refusal = may(ticket)
            if refusal:
                return ActionResult(ActionOutcome.NOT_ALLOWED, refusal, ticket_view(ticket))
            try:
                move(work, ticket, event, actor, now=self._clock(), comment=reason)
            except IllegalTransitionError as error:
                return ActionResult(ActionOutcome.ALREADY_DECIDED, str(error), ticket_view(ticket))
            self._after_resume(ticket, event)
            if event is TicketEvent.CANCEL and ticket.kind == TicketKind.ENROLL.value:
                await _withdraw_enrollment(work.session, ticket)
            await work.session.flush()
            view = ticket_view(ticket)
        return ActionResult(
            ActionOutcome.DONE, f"{view.ref} is now {TicketStatus(view.status).label}", view
        )

    def _after_resume(self, ticket: Ticket, event: TicketEvent) -> None:
        """Retry and manual-done put the blocked step back in the queue; cancel retires the rest."""
        now = self._clock()
        for step in ticket.steps:
            if event is TicketEvent.RETRY and step.state == StepState.FAILED.value:
                step.state = StepState.PENDING.value
                step.attempt = 0
                step.next_attempt_at = now
            elif event is TicketEvent.MANUAL_DONE and step.state == StepState.WAITING_MANUAL.value:
                step.state = StepState.PENDING.value
                step.params = {**(step.params or {}), "manual_confirmed": True}
                step.next_attempt_at = now
            elif event is TicketEvent.CANCEL and step.state in (
                StepState.PENDING.value,
                StepState.WAITING_MANUAL.value,
                StepState.FAILED.value,
            ):
                step.state = StepState.CANCELLED.value


_TICKETS = cast(Table, Ticket.__table__)
_DECISIONS = cast(Table, Decision.__table__)
# What a decision can change on the ticket row (see workflows.lifecycle.change_status).
_DECIDED_COLUMNS = ("status", "version", "decided_at", "closed_at", "updated_at")


def _write_decision(
    work: UnitOfWork, ticket: Ticket, decision: Decision, row_version: int | None
) -> None:
    """Write what :meth:`TicketCommands.decide` changed on the ticket it took out of the session:
    an ``UPDATE`` of the changed columns and the decision's row, both with the work's commit.

    Like the ORM's flush: only changed columns are set, so a ticket whose ``updated_at`` the
    decision left alone gets it from the column's ``onupdate``.
    """
    # get_history per column: ``inspect(ticket).attrs`` builds a view of every attribute on
    # each access, which cost more than the check itself.
    changed = {
        name: getattr(ticket, name)
        for name in _DECIDED_COLUMNS
        if get_history(ticket, name).has_changes()
    }
    work.update(_TICKETS, ticket.id, changed, unchanged_since=row_version)
    work.insert(
        _DECISIONS,
        {
            "ticket_id": ticket.id,
            "approver_id": decision.approver_id,
            "approver_name": decision.approver_name,
            "approve": decision.approve,
            "comment": decision.comment,
            "decided_at": decision.decided_at,
        },
    )


async def _withdraw_enrollment(session: AsyncSession, ticket: Ticket) -> None:
    """A cancelled enrollment leaves nobody enrolled, whatever steps it got through.

    The mapping step writes the enrollment before the later steps run, so an enrollment that
    failed after it and is then cancelled would leave the person "enrolled" (status, the users
    list, and a refusal to ask again) though they never synced. The outside effects of the
    steps that succeeded (the scheduling mapping, the group membership) are not undone yet;
    asking again reuses them, as both steps are idempotent.
    """
    await session.execute(
        update(Enrollment)
        .where(Enrollment.created_by_ticket == ticket.id, Enrollment.active.is_(True))
        .values(active=False)
    )
