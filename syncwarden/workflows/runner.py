"""Running provisioning steps durably: claim, run, record, and retry with backoff.

A step goes ``pending`` → ``running`` (claimed with a lease, committed *before* the outside call)
→ ``succeeded`` / ``waiting_manual`` / back to ``pending`` with a later ``next_attempt_at`` /
``failed``. Because the claim is committed first, a process killed mid-call leaves a ``running``
step whose lease runs out, and the next runner repeats the call; every handler is idempotent, so
the outside effect still happens once.

On PostgreSQL several runners share the queue with ``FOR UPDATE SKIP LOCKED``: each claim takes a
row nobody else holds. On SQLite the claim transaction holds the database write lock instead.
Results are recorded only while the runner still owns the lease; a runner that lost it (paused
past its lease, say) discards its result rather than overwrite another runner's.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased, selectinload

from syncwarden.connectors.errors import (
    ConnectorError,
    MailboxAccessDeniedError,
    PermissionMissingError,
    failure_kind,
)
from syncwarden.core.db import utc_now, write_transaction
from syncwarden.core.failures import report_unexpected
from syncwarden.core.logging import get_logger
from syncwarden.core.settings import ProvisioningSettings
from syncwarden.workflows.announcements import announce_completed, announce_failed, tell_it
from syncwarden.workflows.audit import record_audit
from syncwarden.workflows.lifecycle import apply_event
from syncwarden.workflows.model import TicketEvent, TicketKind, TicketStatus
from syncwarden.workflows.ports import Notification, NotificationKind
from syncwarden.workflows.records import Enrollment, Step, Ticket, canonical_object_id
from syncwarden.workflows.steps import StepContext, StepHandler, StepName, StepOutcome, StepState
from syncwarden.workflows.unit_of_work import UnitsOfWork
from syncwarden.workflows.views import ticket_view
from syncwarden.workflows.wording import plain, step_label

log = get_logger(__name__)
Clock = Callable[[], datetime]

BASE_RETRY_SECONDS = 5.0
MAX_RETRY_SECONDS = 15 * 60.0
# Access-policy changes take 30 minutes to over an hour to reach Exchange: wait longer for those.
POLICY_PROPAGATION_RETRY_SECONDS = 10 * 60.0


@dataclass(frozen=True)
class ClaimedStep:
    step_id: int
    ticket_id: int
    context: StepContext


class StepRunner:
    def __init__(
        self,
        units: UnitsOfWork,
        handlers: Mapping[StepName, StepHandler],
        settings: ProvisioningSettings,
        *,
        owner: str | None = None,
        clock: Clock = utc_now,
        rng: random.Random | None = None,
    ) -> None:
        self._units = units
        self._sessions = units.sessions
        self._handlers = handlers
        self._settings = settings
        self.owner = owner or f"runner-{uuid.uuid4().hex[:12]}"
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrecy
        self._wake = asyncio.Event()
        self.idle = asyncio.Event()

    def wake(self) -> None:
        """Look for work now instead of at the next poll (called after steps are queued)."""
        self.idle.clear()
        self._wake.set()

    async def run_until_idle(self, *, max_steps: int = 10_000) -> int:
        """Run due steps one after another until none is due; returns how many ran."""
        ran = 0
        while ran < max_steps:
            claimed = await self.claim()
            if claimed is None:
                return ran
            await self.run(claimed)
            ran += 1
        return ran

    async def run_forever(self, stop: asyncio.Event, *, poll_seconds: float = 5.0) -> None:
        """The loop ``serve`` runs: do what is due, then wait for a wake-up or the next poll."""
        while not stop.is_set():
            self._wake.clear()
            try:
                await self.run_until_idle()
            except Exception as error:  # a database hiccup must not kill the loop
                report_unexpected(log, "runner.loop_failed", error, where="runner.loop")
            if not self._wake.is_set():
                self.idle.set()  # nothing is due; tells tests and health checks we caught up
            stopped = asyncio.ensure_future(stop.wait())
            woken = asyncio.ensure_future(self._wake.wait())
            _, waiting = await asyncio.wait(
                {stopped, woken}, timeout=poll_seconds, return_when=asyncio.FIRST_COMPLETED
            )
            for task in waiting:
                task.cancel()

    async def claim(self) -> ClaimedStep | None:
        """Take the next due step (first unfinished step of a provisioning ticket) under a lease."""
        now = self._clock()
        earlier = aliased(Step)
        first_unfinished = (
            select(func.min(earlier.position))
            .where(earlier.ticket_id == Step.ticket_id, earlier.state != StepState.SUCCEEDED.value)
            .scalar_subquery()
        )
        due = or_(
            and_(Step.state == StepState.PENDING.value, Step.next_attempt_at <= now),
            and_(Step.state == StepState.RUNNING.value, Step.lease_expires_at < now),
        )
        query = (
            select(Step)
            .join(Ticket, Ticket.id == Step.ticket_id)
            .where(Ticket.status == TicketStatus.PROVISIONING.value, due)
            .where(Step.position == first_unfinished)
            .order_by(Step.next_attempt_at, Step.id)
            .limit(1)
            .with_for_update(skip_locked=True, of=Step)
        )
        async with write_transaction(self._sessions) as session:
            step = await session.scalar(query)
            if step is None:
                return None
            ticket = await self._ticket(session, step.ticket_id)
            step.state = StepState.RUNNING.value
            step.attempt += 1
            step.lease_owner = self.owner
            step.lease_expires_at = now + timedelta(seconds=self._settings.lease_seconds)
            context = StepContext(
                ticket=ticket_view(ticket),
                step=StepName(step.name),
                idempotency_key=step.idempotency_key,
                attempt=step.attempt,
                manual_confirmed=bool((step.params or {}).get("manual_confirmed")),
            )
            return ClaimedStep(step.id, ticket.id, context)

    async def run(self, claimed: ClaimedStep) -> None:
        context = claimed.context
        bound = log.bind(
            ticket=context.ticket.ref, step=context.step.value, attempt=context.attempt
        )
        bound.info("step.started")
        handler = self._handlers[context.step]
        try:
            outcome = await handler(context)
        except ConnectorError as error:
            bound.warning("step.error", error=str(error), retryable=error.retryable)
            await self._record_failure(claimed, error, retryable=error.retryable)
            return
        except OperationalError as error:
            # Our own database was busy or briefly unreachable (a handler keeps data in it).
            bound.warning("step.database_error", error=str(error.orig))
            await self._record_failure(claimed, error, retryable=True)
            return
        except Exception as error:  # a bug in a handler fails the ticket, not the runner
            report_unexpected(bound, "step.crashed", error, where="runner.step")
            await self._record_failure(claimed, error, retryable=False)
            return
        await self._record_success(claimed, outcome)

    # ----------------------------------------------------------------------------- recording

    async def _record_success(self, claimed: ClaimedStep, outcome: StepOutcome) -> None:
        async with self._units() as work:
            session = work.session
            step = await self._owned_step(session, claimed)
            if step is None:
                return
            ticket = await self._ticket(session, claimed.ticket_id)
            now = self._clock()
            step.lease_owner = None
            step.lease_expires_at = None
            step.last_error = None
            if outcome.manual_task is not None:
                step.state = StepState.WAITING_MANUAL.value
                step.result = {"manual_task": outcome.manual_task}
                self._move(session, ticket, TicketEvent.WAIT_MANUAL, f"{step.name} needs IT")
                view = ticket_view(ticket)
                action = outcome.manual_task["action"]
                text = f"{view.ref}: manual step for {view.subject.name}: {action}"
                task = Notification(NotificationKind.MANUAL_STEP, view, text, outcome.manual_task)
                tell_it(work, task)
            else:
                step.state = StepState.SUCCEEDED.value
                step.result = outcome.result
                step.finished_at = now
                await self._apply_local_effects(session, ticket, StepName(step.name), now)
                record_audit(
                    session,
                    actor="system",
                    action=f"step.{step.name}.succeeded",
                    ticket_ref=ticket.ref,
                    after=outcome.result,
                )
                if all(s.state == StepState.SUCCEEDED.value for s in ticket.steps):
                    self._move(session, ticket, TicketEvent.COMPLETE, "all steps done")
                    announce_completed(work, ticket_view(ticket))

    async def _record_failure(
        self, claimed: ClaimedStep, error: Exception, *, retryable: bool
    ) -> None:
        message = failure_message(error)
        async with self._units() as work:
            session = work.session
            step = await self._owned_step(session, claimed)
            if step is None:
                return
            ticket = await self._ticket(session, claimed.ticket_id)
            step.lease_owner = None
            step.lease_expires_at = None
            step.last_error = message[:2000]
            if retryable and step.attempt < self._settings.max_attempts:
                wait = self._retry_delay(error, step.attempt)
                step.state = StepState.PENDING.value
                step.next_attempt_at = self._clock() + timedelta(seconds=wait)
                record_audit(
                    session,
                    actor="system",
                    action=f"step.{step.name}.retry_scheduled",
                    ticket_ref=ticket.ref,
                    after={
                        "attempt": step.attempt,
                        "wait_seconds": round(wait, 1),
                        "error": message[:500],
                    },
                )
                return
            step.state = StepState.FAILED.value
            # The ticket (and its cards) say it plainly; the audit keeps the error as it came.
            # Both stay when IT retries (a retry that fails again replaces them), so a ticket
            # that failed once is listed under its kind until it fails differently.
            ticket.failure_reason = (
                f"{step_label(step.name)}: {plain(message)} "
                f"({step.attempt} attempt{'s' if step.attempt != 1 else ''})"
            )[:2000]
            # A handler's bug or our own database out of attempts is OTHER.
            ticket.failure_kind = failure_kind(error).value
            self._move(session, ticket, TicketEvent.FAIL, f"{step.name}: {message}")
            announce_failed(work, ticket_view(ticket), step.name, message)

    def _retry_delay(self, error: Exception, attempt: int) -> float:
        # Only the access policy's refusal waits for propagation; a missing permission
        # (PermissionMissingError) is not retryable and fails the step at once, named.
        if isinstance(error, ConnectorError) and error.retry_after is not None:
            return error.retry_after
        if isinstance(error, MailboxAccessDeniedError):
            return POLICY_PROPAGATION_RETRY_SECONDS
        bound: float = min(MAX_RETRY_SECONDS, BASE_RETRY_SECONDS * 2 ** (attempt - 1))
        return bound / 2 + self._rng.uniform(0, bound / 2)

    async def _apply_local_effects(
        self, session: AsyncSession, ticket: Ticket, step: StepName, now: datetime
    ) -> None:
        """Our own records that follow an outside effect, written in the same transaction."""
        enrollment = await session.scalar(
            select(Enrollment)
            .where(
                Enrollment.subject_id == canonical_object_id(ticket.subject_id),
                Enrollment.profile_id == (ticket.profile_id or ""),
            )
            .order_by(Enrollment.active.desc(), Enrollment.id.desc())
            .limit(1)
            .with_for_update()
        )
        if step is StepName.MAP_PROFILE:
            if enrollment is None or not enrollment.active:
                # A new row per enrollment keeps the history of earlier ones intact.
                session.add(
                    Enrollment(
                        subject_id=ticket.subject_id,
                        subject_upn=ticket.subject_upn,
                        subject_name=ticket.subject_name,
                        profile_id=ticket.profile_id or "",
                        mailbox=ticket.mailbox,
                        active=True,
                        paused=False,
                        created_by_ticket=ticket.id,
                        updated_by_ticket=ticket.id,
                        access_until=ticket.access_until,
                    )
                )
            else:
                enrollment.mailbox = ticket.mailbox
                enrollment.updated_by_ticket = ticket.id
                if ticket.kind == TicketKind.ENROLL.value:
                    enrollment.access_until = ticket.access_until
        elif step is StepName.EXTEND_ACCESS and enrollment is not None and enrollment.active:
            # Time-bound access: a new end date, reminded of afresh before it comes.
            enrollment.access_until = ticket.access_until
            enrollment.expiry_reminded_at = None
            enrollment.updated_by_ticket = ticket.id
        elif step is StepName.DEACTIVATE_MAPPING and enrollment is not None:
            enrollment.active = False
            enrollment.updated_by_ticket = ticket.id
        elif step is StepName.REQUEST_INITIAL_SYNC and enrollment is not None:
            enrollment.sync_requested_at = now

    def _move(self, session: AsyncSession, ticket: Ticket, event: TicketEvent, note: str) -> None:
        apply_event(session, ticket, event, actor="system", now=self._clock(), note=note)

    async def _owned_step(self, session: AsyncSession, claimed: ClaimedStep) -> Step | None:
        step = await session.scalar(
            select(Step).where(Step.id == claimed.step_id).with_for_update()
        )
        if step is None or step.state != StepState.RUNNING.value or step.lease_owner != self.owner:
            log.warning("step.lease_lost", step_id=claimed.step_id, owner=self.owner)
            return None
        return step

    async def _ticket(self, session: AsyncSession, ticket_id: int) -> Ticket:
        ticket = await session.scalar(
            select(Ticket)
            .where(Ticket.id == ticket_id)
            .options(selectinload(Ticket.steps), selectinload(Ticket.decisions))
            .with_for_update()
        )
        assert ticket is not None
        return ticket


def failure_message(error: Exception) -> str:
    """A step's error in words for the ticket and IT; a missing permission is named with its fix.

    Exchange refuses a mailbox outside the access policy and an app without the permission with
    the same 403; the connector tells them apart. Only the first is "not propagated yet"; the
    second never clears by waiting, so it is said plainly instead of being retried.
    """
    if isinstance(error, PermissionMissingError):
        named = error.permission.split(" and ") if error.permission else []
        if named and all(part in error.message for part in named):
            # The connector already said what is missing and where it is granted (a permission
            # and an Exchange role are granted in different places, so each is named).
            return f"{error}; once it is granted, press Retry"
        what = (
            f"the Microsoft Graph application permission {error.permission}"
            if error.permission
            else "an API permission this step needs"
        )
        return (
            f"Syncwarden's app lacks {what}: an administrator must add it to the app "
            f"registration and grant admin consent, then press Retry ({error})"
        )
    if isinstance(error, ConnectorError):
        return str(error)
    return f"{type(error).__name__}: {error}"
