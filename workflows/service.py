"""The use cases of access requests: ask, decide, cancel, retry, and the clock-driven checks.

Each use case is one database transaction that changes the ticket through the transition table,
writes an audit row and queues notifications. Notifications go out only after the commit, so
nobody is ever told about a change that was rolled back. Every refusal is an answer a person can
act on (a :class:`RequestProblem` or a :class:`ActionResult` with a message), never an exception
that reaches the user.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import partial

from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from connectors.errors import ConnectorError, NotFoundError
from connectors.ports import Directory, DirectoryUser
from connectors.scheduling.ports import Profile, SchedulingSystem
from core.db import utc_now, write_transaction
from core.logging import get_logger
from core.settings import ApprovalSettings, ProvisioningSettings
from workflows.audit import record_audit
from workflows.delivery import AfterCommit, status_line
from workflows.lifecycle import apply_event
from workflows.model import IllegalTransitionError, TicketEvent, TicketKind, TicketStatus
from workflows.ports import Channel, Notification, NotificationKind, Notifier, Person, TicketView
from workflows.records import Decision, Enrollment, Step, Ticket, ticket_id_from_ref
from workflows.roster import Roster
from workflows.steps import StepState, idempotency_key, plan
from workflows.views import ticket_view

log = get_logger(__name__)
Clock = Callable[[], datetime]


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
class PersonStatus:
    open_ticket: TicketView | None
    enrolled_mailbox: str | None
    last_sync_at: datetime | None
    last_error: str | None
    last_sync_summary: str | None = None


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


class WorkflowService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        directory: Directory,
        scheduling: SchedulingSystem,
        notifier: Notifier,
        roster: Roster,
        approvals: ApprovalSettings,
        provisioning: ProvisioningSettings,
        clock: Clock = utc_now,
        on_steps_queued: Callable[[], None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._directory = directory
        self._scheduling = scheduling
        self._notifier = notifier
        self._roster = roster
        self._approvals = approvals
        self._provisioning = provisioning
        self._clock = clock
        self._on_steps_queued = on_steps_queued or (lambda: None)

    # ----------------------------------------------------------------------------- requests

    async def request_enrollment(
        self,
        requester: Person,
        *,
        subject: str | None = None,
        mailbox: str | None = None,
        profile_id: str | None = None,
        justification: str = "",
    ) -> RequestResult:
        """Validate a request to enroll ``subject`` (default: the requester) and open a ticket."""
        person, problem = await self._resolve_subject(requester, subject)
        if problem:
            return RequestResult(problems=(problem,))
        assert person is not None
        existing = await self._existing_answer(person, TicketKind.ENROLL)
        if existing:
            return existing
        problems: list[RequestProblem] = []
        problems.extend(await self._mailbox_problems(person))
        chosen_mailbox, mailbox_problem = self._chosen_mailbox(person, mailbox)
        if mailbox_problem:
            problems.append(mailbox_problem)
        profile, candidates, profile_problem = await self._choose_profile(person, profile_id)
        if profile_problem:
            problems.append(profile_problem)
        if problems:
            return RequestResult(problems=tuple(problems), profile_candidates=tuple(candidates))
        assert profile is not None
        return await self._open_ticket(
            TicketKind.ENROLL,
            requester,
            person,
            mailbox=chosen_mailbox,
            previous_mailbox=None,
            profile=profile,
            justification=justification,
        )

    async def request_removal(
        self, requester: Person, *, subject: str | None = None, justification: str = ""
    ) -> RequestResult:
        found = await self._enrolled_subject(requester, subject, must_be_enabled=False)
        if isinstance(found, RequestResult):
            return found
        person, enrollment = found
        profile = Profile(enrollment.profile_id, enrollment.profile_id, None)
        return await self._open_ticket(
            TicketKind.REMOVE,
            requester,
            person,
            mailbox=enrollment.mailbox,
            previous_mailbox=None,
            profile=profile,
            justification=justification,
        )

    async def request_change(
        self,
        requester: Person,
        *,
        mailbox: str,
        subject: str | None = None,
        justification: str = "",
    ) -> RequestResult:
        found = await self._enrolled_subject(requester, subject, must_be_enabled=True)
        if isinstance(found, RequestResult):
            return found
        person, enrollment = found
        chosen, mailbox_problem = self._chosen_mailbox(person, mailbox)
        if mailbox_problem:
            return RequestResult(problems=(mailbox_problem,))
        if chosen.lower() == enrollment.mailbox.lower():
            return RequestResult(
                problems=(RequestProblem("mailbox", f"calendar sync already uses {chosen}"),)
            )
        profile = Profile(enrollment.profile_id, enrollment.profile_id, None)
        return await self._open_ticket(
            TicketKind.CHANGE,
            requester,
            person,
            mailbox=chosen,
            previous_mailbox=enrollment.mailbox,
            profile=profile,
            justification=justification,
        )

    async def enrollment_form(
        self, requester: Person, *, subject: str | None = None
    ) -> EnrollmentForm:
        """What the request card shows, or why the person cannot ask (open ticket, enrolled)."""
        person, problem = await self._resolve_subject(requester, subject)
        if problem:
            return EnrollmentForm(None, problems=(problem,))
        assert person is not None
        existing = await self._existing_answer(person, TicketKind.ENROLL)
        if existing:
            return EnrollmentForm(person, existing=existing.ticket, message=existing.message)
        problems = await self._mailbox_problems(person)
        _, candidates, profile_problem = await self._choose_profile(person, None)
        if profile_problem and not candidates:
            problems.append(profile_problem)
        primary = person.primary_smtp or person.user_principal_name
        addresses = tuple(a for a in _addresses(person) if a.lower() != primary.lower())
        return EnrollmentForm(
            person,
            addresses=(primary, *addresses),
            primary=primary,
            profiles=tuple(candidates),
            problems=tuple(problems),
        )

    async def status_of(self, person_id: str) -> PersonStatus:
        enrollment = await self._active_enrollment(person_id)
        return PersonStatus(
            open_ticket=await self._open_ticket_of(person_id),
            enrolled_mailbox=enrollment.mailbox if enrollment else None,
            last_sync_at=enrollment.last_success_at if enrollment else None,
            last_error=enrollment.last_error if enrollment else None,
            last_sync_summary=enrollment.last_sync_summary if enrollment else None,
        )

    async def enrollments(self) -> list[EnrollmentView]:
        """Everyone enrolled (active), by name: the registry IT looks at."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(Enrollment)
                .where(Enrollment.active.is_(True))
                .order_by(Enrollment.subject_name)
            )
            return [_enrollment_view(row) for row in rows.all()]

    async def set_paused(self, actor: Person, who: str, *, paused: bool) -> ActionResult:
        """IT pauses or resumes one person's sync; ``who`` is an object id or an address."""
        if not await self._roster.is_it_admin(actor.id):
            return ActionResult(
                ActionOutcome.NOT_ALLOWED, "only IT admins can pause or resume sync"
            )
        person, problem = await self._resolve_subject(actor, who, must_be_enabled=False)
        if problem or person is None:
            return ActionResult(
                ActionOutcome.NOT_FOUND, problem.message if problem else "nobody found"
            )
        async with write_transaction(self._sessions) as session:
            row = await session.scalar(
                select(Enrollment)
                .where(
                    func.lower(Enrollment.subject_id) == person.id.lower(),
                    Enrollment.active.is_(True),
                )
                .with_for_update()
            )
            if row is None:
                return ActionResult(
                    ActionOutcome.NOT_FOUND, f"{person.display_name} is not enrolled"
                )
            if row.paused == paused:
                state = "paused" if paused else "running"
                return ActionResult(
                    ActionOutcome.DONE, f"sync for {person.display_name} was already {state}"
                )
            row.paused = paused
            record_audit(
                session,
                actor=actor.upn or actor.id,
                action="enrollment.paused" if paused else "enrollment.resumed",
                before={"paused": not paused},
                after={"paused": paused, "subject": person.user_principal_name},
            )
        verb = "paused" if paused else "resumed"
        return ActionResult(ActionOutcome.DONE, f"sync for {person.display_name} is {verb}")

    # ----------------------------------------------------------------------------- decisions

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
        ticket_id = ticket_id_from_ref(ref)
        if ticket_id is None:
            return ActionResult(
                ActionOutcome.INVALID, f"'{ref}' is not a ticket number like SW-1042"
            )
        allowed = await self._roster.approvers()
        pending = AfterCommit()
        async with write_transaction(self._sessions) as session:
            ticket = await self._locked_ticket(session, ticket_id)
            if ticket is None:
                return ActionResult(ActionOutcome.NOT_FOUND, f"there is no ticket {ref}")
            view = ticket_view(ticket)
            if ticket.ticket_status is not TicketStatus.AWAITING_APPROVAL:
                return ActionResult(
                    ActionOutcome.ALREADY_DECIDED,
                    f"{ticket.ref} is already {ticket.ticket_status.label}",
                    view,
                )
            refusal = await self._approval_refusal(ticket, approver, allowed)
            if refusal:
                return ActionResult(ActionOutcome.NOT_ALLOWED, refusal, view)
            if version is not None and version != ticket.version:
                return ActionResult(
                    ActionOutcome.STALE,
                    f"{ticket.ref} changed since this card was sent; here is its current state",
                    view,
                )
            if any(d.approver_id.lower() == approver.id.lower() for d in ticket.decisions):
                return ActionResult(
                    ActionOutcome.ALREADY_DECIDED, "you have already decided on this ticket", view
                )
            now = self._clock()
            ticket.decisions.append(
                Decision(
                    approver_id=approver.id,
                    approver_name=approver.name,
                    approve=approve,
                    comment=comment.strip(),
                    decided_at=now,
                )
            )
            approvals = sum(1 for d in ticket.decisions if d.approve)
            if not approve:
                self._transition(
                    session, ticket, TicketEvent.REJECT, approver, pending, comment=comment
                )
            elif approvals >= ticket.required_approvals:
                self._transition(
                    session, ticket, TicketEvent.APPROVE, approver, pending, comment=comment
                )
                self._queue_steps(ticket)
                self._transition(session, ticket, TicketEvent.START, approver, pending)
            else:
                ticket.version += 1
                record_audit(
                    session,
                    actor=approver.upn or approver.id,
                    action="ticket.approval_recorded",
                    ticket_ref=ticket.ref,
                    after={"approvals": approvals, "required": ticket.required_approvals},
                )
            await session.flush()
            view = ticket_view(ticket)
            pending.add(
                partial(self._notifier.update_card, view, key=f"{view.ref}:card:{view.version}")
            )
        await pending.deliver()
        if view.status == TicketStatus.PROVISIONING:
            self._on_steps_queued()
        verb = "approved" if approve else "rejected"
        return ActionResult(ActionOutcome.DONE, f"{view.ref} {verb}", view)

    async def cancel(self, ref: str, actor: Person, *, reason: str = "") -> ActionResult:
        """Requester, subject or an IT admin may cancel a ticket that is not finished."""
        is_admin = await self._roster.is_it_admin(actor.id)

        def may(ticket: Ticket) -> str | None:
            involved = actor.id.lower() in (ticket.requester_id.lower(), ticket.subject_id.lower())
            return (
                None
                if involved or is_admin
                else "only the requester, the person or IT can cancel it"
            )

        return await self._act(ref, actor, TicketEvent.CANCEL, may, reason=reason)

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

    async def get_ticket(self, ref: str) -> TicketView | None:
        ticket_id = ticket_id_from_ref(ref)
        if ticket_id is None:
            return None
        async with self._sessions() as session:
            ticket = await self._load_ticket(session, ticket_id)
            return ticket_view(ticket) if ticket else None

    async def open_tickets(self) -> list[TicketView]:
        open_statuses = [status.value for status in TicketStatus if status.is_open]
        async with self._sessions() as session:
            rows = await session.scalars(
                _with_children(select(Ticket))
                .where(Ticket.status.in_(open_statuses))
                .order_by(Ticket.created_at)
            )
            return [ticket_view(ticket) for ticket in rows.all()]

    # ----------------------------------------------------------------------------- the clock

    async def check_pending(self) -> dict[str, int]:
        """Remind, escalate and expire undecided requests; safe to run often and twice at once."""
        now = self._clock()
        counts = {"reminded": 0, "escalated": 0, "expired": 0}
        approvers = await self._roster.approvers()
        fallback = await self._roster.fallback_approvers()
        pending = AfterCommit()
        async with write_transaction(self._sessions) as session:
            rows = await session.scalars(
                _with_children(select(Ticket))
                .where(Ticket.status == TicketStatus.AWAITING_APPROVAL.value)
                .with_for_update()
            )
            for ticket in rows.all():
                age = now - ticket.created_at
                system = Person("system", "Syncwarden")
                if age >= timedelta(days=self._approvals.expiry_days):
                    self._transition(session, ticket, TicketEvent.EXPIRE, system, pending)
                    counts["expired"] += 1
                    continue
                if ticket.escalated_at is None and age >= timedelta(
                    hours=self._approvals.escalation_hours
                ):
                    ticket.escalated_at = now
                    self._ask_for_approval(
                        ticket, fallback or approvers, NotificationKind.APPROVAL_ESCALATED, pending
                    )
                    record_audit(
                        session, actor="system", action="ticket.escalated", ticket_ref=ticket.ref
                    )
                    counts["escalated"] += 1
                elif ticket.reminded_at is None and age >= timedelta(
                    hours=self._approvals.reminder_hours
                ):
                    ticket.reminded_at = now
                    self._ask_for_approval(
                        ticket, approvers, NotificationKind.APPROVAL_REMINDER, pending
                    )
                    record_audit(
                        session, actor="system", action="ticket.reminded", ticket_ref=ticket.ref
                    )
                    counts["reminded"] += 1
        await pending.deliver()
        return counts

    # ----------------------------------------------------------------------------- internals

    async def _resolve_subject(
        self, requester: Person, subject: str | None, *, must_be_enabled: bool = True
    ) -> tuple[DirectoryUser | None, RequestProblem | None]:
        on_behalf = subject is not None and subject.strip().lower() not in (
            requester.id.lower(),
            requester.upn.lower(),
        )
        if on_behalf and not await self._roster.is_it_admin(requester.id):
            return None, RequestProblem(
                "subject",
                "only IT admins can ask on someone else's behalf; ask the person to message me",
            )
        wanted = subject.strip() if subject and on_behalf else requester.id
        try:
            if "@" in wanted:
                person = await self._directory.find_user_by_address(wanted)
            else:
                person = await self._directory.get_user(wanted)
        except NotFoundError:
            person = None
        except ConnectorError as error:
            log.warning("request.directory_failed", error=str(error))
            return None, RequestProblem(
                "subject", "the directory could not be reached; try again in a minute"
            )
        if person is None:
            return None, RequestProblem(
                "subject", f"nobody with the address or id '{wanted}' is in the directory"
            )
        if must_be_enabled and not person.account_enabled:
            return None, RequestProblem("subject", f"{person.display_name}'s account is disabled")
        return person, None

    async def _enrolled_subject(
        self, requester: Person, subject: str | None, *, must_be_enabled: bool
    ) -> tuple[DirectoryUser, Enrollment] | RequestResult:
        """The enrolled person a removal or change is about, or the answer explaining why not."""
        person, problem = await self._resolve_subject(
            requester, subject, must_be_enabled=must_be_enabled
        )
        if problem:
            return RequestResult(problems=(problem,))
        assert person is not None
        open_ticket = await self._open_ticket_of(person.id)
        if open_ticket:
            return RequestResult(
                ticket=open_ticket,
                message=f"{open_ticket.ref} is still open for {person.display_name}",
            )
        enrollment = await self._active_enrollment(person.id)
        if enrollment is None:
            message = f"{person.display_name} is not enrolled in calendar sync"
            return RequestResult(problems=(RequestProblem("subject", message),))
        return person, enrollment

    async def _mailbox_problems(self, person: DirectoryUser) -> list[RequestProblem]:
        try:
            has_mailbox = await self._directory.has_mailbox(person.id)
        except ConnectorError as error:
            log.warning("request.mailbox_check_failed", error=str(error))
            return [
                RequestProblem(
                    "mailbox", "Exchange Online could not be reached; try again in a minute"
                )
            ]
        if has_mailbox:
            return []
        return [
            RequestProblem(
                "mailbox",
                f"{person.display_name} has no Exchange Online mailbox (no licence, or it is "
                "on-premises); IT must sort that out first",
            )
        ]

    def _chosen_mailbox(
        self, person: DirectoryUser, mailbox: str | None
    ) -> tuple[str, RequestProblem | None]:
        primary = person.primary_smtp or person.user_principal_name
        if not mailbox or not mailbox.strip():
            return primary, None
        if not person.owns_address(mailbox):
            return primary, RequestProblem(
                "mailbox", f"{mailbox.strip()} is not one of {person.display_name}'s addresses"
            )
        return primary, None

    async def _choose_profile(
        self, person: DirectoryUser, profile_id: str | None
    ) -> tuple[Profile | None, list[Profile], RequestProblem | None]:
        addresses = _addresses(person)
        exact: dict[str, Profile] = {}
        for address in addresses:
            for profile in await self._scheduling.find_profiles(email=address):
                exact[profile.id] = profile
        by_name = list(await self._scheduling.find_profiles(name=person.display_name))
        candidates = list(exact.values()) or by_name
        if profile_id:
            chosen = next((p for p in [*exact.values(), *by_name] if p.id == profile_id), None)
            if chosen is None:
                return (
                    None,
                    candidates,
                    RequestProblem(
                        "profile",
                        f"scheduling profile {profile_id} does not belong to {person.display_name}",
                    ),
                )
            return chosen, candidates, None
        if len(exact) == 1:
            return next(iter(exact.values())), candidates, None
        if not candidates:
            return (
                None,
                [],
                RequestProblem(
                    "profile",
                    f"no scheduling profile matches {person.display_name} "
                    f"({', '.join(addresses)}); ask the scheduling administrator to add one",
                ),
            )
        return (
            None,
            candidates,
            RequestProblem("profile", "several scheduling profiles match; choose one"),
        )

    async def _existing_answer(
        self, person: DirectoryUser, kind: TicketKind
    ) -> RequestResult | None:
        open_ticket = await self._open_ticket_of(person.id)
        if open_ticket:
            return RequestResult(
                ticket=open_ticket,
                message=f"{open_ticket.ref} is already open for {person.display_name}",
            )
        if kind is TicketKind.ENROLL:
            enrollment = await self._active_enrollment(person.id)
            if enrollment is not None:
                async with self._sessions() as session:
                    ticket = (
                        await self._load_ticket(session, enrollment.created_by_ticket)
                        if enrollment.created_by_ticket
                        else None
                    )
                    view = ticket_view(ticket) if ticket else None
                message = (
                    f"{person.display_name} is already enrolled (syncing into {enrollment.mailbox})"
                )
                return RequestResult(
                    ticket=view, problems=(RequestProblem("subject", message),), message=message
                )
        return None

    async def _open_ticket_of(self, subject_id: str) -> TicketView | None:
        open_statuses = [status.value for status in TicketStatus if status.is_open]
        async with self._sessions() as session:
            ticket = await session.scalar(
                _with_children(select(Ticket)).where(
                    func.lower(Ticket.subject_id) == subject_id.lower(),
                    Ticket.status.in_(open_statuses),
                )
            )
            return ticket_view(ticket) if ticket else None

    async def _active_enrollment(self, subject_id: str) -> Enrollment | None:
        async with self._sessions() as session:
            result: Enrollment | None = await session.scalar(
                select(Enrollment).where(
                    func.lower(Enrollment.subject_id) == subject_id.lower(),
                    Enrollment.active.is_(True),
                )
            )
            return result

    async def _open_ticket(
        self,
        kind: TicketKind,
        requester: Person,
        person: DirectoryUser,
        *,
        mailbox: str,
        previous_mailbox: str | None,
        profile: Profile,
        justification: str,
    ) -> RequestResult:
        on_behalf = requester.id.lower() != person.id.lower()
        auto_approve = (
            on_behalf
            and self._approvals.auto_approve_it_on_behalf
            and await self._roster.is_it_admin(requester.id)
        )
        approvers = await self._roster.approvers()
        pending = AfterCommit()
        try:
            async with write_transaction(self._sessions) as session:
                ticket = Ticket(
                    kind=kind.value,
                    status=TicketStatus.AWAITING_APPROVAL.value,
                    version=1,
                    subject_id=person.id,
                    subject_upn=person.user_principal_name,
                    subject_name=person.display_name,
                    subject_mail=person.primary_smtp or person.user_principal_name,
                    requester_id=requester.id,
                    requester_upn=requester.upn,
                    requester_name=requester.name,
                    justification=justification.strip(),
                    mailbox=mailbox,
                    previous_mailbox=previous_mailbox,
                    profile_id=profile.id,
                    profile_name=profile.name,
                    required_approvals=self._approvals.required_approvals,
                    created_at=self._clock(),
                    decisions=[],
                    steps=[],
                )
                session.add(ticket)
                await session.flush()
                record_audit(
                    session,
                    actor=requester.upn or requester.id,
                    action=f"ticket.created.{kind.value}",
                    ticket_ref=ticket.ref,
                    after={
                        "subject": person.user_principal_name,
                        "mailbox": mailbox,
                        "profile": profile.id,
                    },
                )
                if auto_approve:
                    self._transition(
                        session,
                        ticket,
                        TicketEvent.APPROVE,
                        requester,
                        pending,
                        comment="filed by IT; no approval needed",
                    )
                    self._queue_steps(ticket)
                    self._transition(session, ticket, TicketEvent.START, requester, pending)
                else:
                    self._ask_for_approval(
                        ticket, approvers, NotificationKind.APPROVAL_REQUESTED, pending
                    )
                    view = ticket_view(ticket)
                    pending.add(
                        partial(
                            self._notifier.to_channel,
                            Channel.IT,
                            status_line(view, "created, waiting for approval"),
                            key=f"{view.ref}:status:created",
                        )
                    )
                await session.flush()
                view = ticket_view(ticket)
        except IntegrityError:
            # Another request for the same person won the race; answer with its ticket.
            winner = await self._open_ticket_of(person.id)
            return RequestResult(
                ticket=winner, message=f"{person.display_name} already has an open request"
            )
        await pending.deliver()
        if auto_approve:
            self._on_steps_queued()
        return RequestResult(ticket=view, created=True, message=f"{view.ref} created")

    async def _approval_refusal(
        self, ticket: Ticket, approver: Person, allowed: frozenset[str]
    ) -> str | None:
        who = approver.id.lower()
        if who == ticket.subject_id.lower():
            return "you cannot approve a request about yourself"
        if who == ticket.requester_id.lower():
            return "you cannot approve your own request"
        eligible = set(allowed)
        if ticket.escalated_at is not None:
            eligible |= await self._roster.fallback_approvers()
        if who not in eligible:
            return "you are not an approver for calendar sync requests"
        return None

    def _ask_for_approval(
        self,
        ticket: Ticket,
        approvers: frozenset[str],
        kind: NotificationKind,
        pending: AfterCommit,
    ) -> None:
        view = ticket_view(ticket)
        excluded = {ticket.subject_id.lower(), ticket.requester_id.lower()}
        text = {
            NotificationKind.APPROVAL_REQUESTED: (
                f"{view.ref}: {view.requester.name} asks for calendar sync for {view.subject.name}"
            ),
            NotificationKind.APPROVAL_REMINDER: (
                f"Reminder: {view.ref} is still waiting for your decision"
            ),
            NotificationKind.APPROVAL_ESCALATED: (
                f"{view.ref} has waited too long for a decision and is escalated to you"
            ),
        }[kind]
        eligible = sorted(approvers - excluded)
        # The approvals channel's card lists who may see the buttons (object ids; the bot maps
        # them to Teams ids).
        notification = Notification(kind, view, text, {"approvers": ",".join(eligible)})
        for approver in eligible:
            pending.add(
                partial(
                    self._notifier.to_user,
                    approver,
                    notification,
                    key=f"{view.ref}:{kind.value}:{approver}",
                )
            )
        pending.add(
            partial(
                self._notifier.to_channel,
                Channel.APPROVALS,
                notification,
                key=f"{view.ref}:{kind.value}:channel",
            )
        )

    def _queue_steps(self, ticket: Ticket) -> None:
        names = plan(
            ticket.ticket_kind, remove_synced_events=self._provisioning.remove_synced_events
        )
        now = self._clock()
        for position, name in enumerate(names, start=1):
            ticket.steps.append(
                Step(
                    position=position,
                    name=name.value,
                    state=StepState.PENDING.value,
                    attempt=0,
                    next_attempt_at=now,
                    idempotency_key=idempotency_key(ticket.ref, position, name),
                    params={},
                )
            )

    def _transition(
        self,
        session: AsyncSession,
        ticket: Ticket,
        event: TicketEvent,
        actor: Person,
        pending: AfterCommit,
        *,
        comment: str = "",
    ) -> None:
        apply_event(
            session, ticket, event, actor=actor.upn or actor.id, now=self._clock(), note=comment
        )
        self._announce(ticket, event, actor, pending, comment)

    def _announce(
        self, ticket: Ticket, event: TicketEvent, actor: Person, pending: AfterCommit, comment: str
    ) -> None:
        view = ticket_view(ticket)
        said = f' ("{comment.strip()}")' if comment.strip() else ""
        requester_news = {
            TicketEvent.APPROVE: (
                NotificationKind.APPROVED,
                f"{view.ref} was approved by {actor.name}{said}; setting it up now",
            ),
            TicketEvent.REJECT: (
                NotificationKind.REJECTED,
                f"{view.ref} was rejected by {actor.name}{said}",
            ),
            TicketEvent.CANCEL: (
                NotificationKind.CANCELLED,
                f"{view.ref} was cancelled by {actor.name}{said}",
            ),
            TicketEvent.EXPIRE: (
                NotificationKind.EXPIRED,
                f"{view.ref} expired: nobody decided in time. Ask again if you still need it.",
            ),
        }
        if event in requester_news:
            kind, text = requester_news[event]
            notification = Notification(kind, view, text)
            for person in {view.requester.id, view.subject.id}:
                pending.add(
                    partial(
                        self._notifier.to_user,
                        person,
                        notification,
                        key=f"{view.ref}:{kind.value}:{person}",
                    )
                )
            pending.add(
                partial(
                    self._notifier.to_channel,
                    Channel.IT,
                    status_line(view, text),
                    key=f"{view.ref}:status:{event.value}:{view.version}",
                )
            )
            pending.add(
                partial(self._notifier.update_card, view, key=f"{view.ref}:card:{view.version}")
            )

    async def _act(
        self,
        ref: str,
        actor: Person,
        event: TicketEvent,
        may: Callable[[Ticket], str | None],
        *,
        reason: str = "",
    ) -> ActionResult:
        ticket_id = ticket_id_from_ref(ref)
        if ticket_id is None:
            return ActionResult(
                ActionOutcome.INVALID, f"'{ref}' is not a ticket number like SW-1042"
            )
        pending = AfterCommit()
        async with write_transaction(self._sessions) as session:
            ticket = await self._locked_ticket(session, ticket_id)
            if ticket is None:
                return ActionResult(ActionOutcome.NOT_FOUND, f"there is no ticket {ref}")
            refusal = may(ticket)
            if refusal:
                return ActionResult(ActionOutcome.NOT_ALLOWED, refusal, ticket_view(ticket))
            try:
                self._transition(session, ticket, event, actor, pending, comment=reason)
            except IllegalTransitionError as error:
                return ActionResult(ActionOutcome.ALREADY_DECIDED, str(error), ticket_view(ticket))
            self._after_resume(ticket, event)
            await session.flush()
            view = ticket_view(ticket)
        await pending.deliver()
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

    async def _locked_ticket(self, session: AsyncSession, ticket_id: int) -> Ticket | None:
        return await session.scalar(
            _with_children(select(Ticket)).where(Ticket.id == ticket_id).with_for_update()
        )

    async def _load_ticket(self, session: AsyncSession, ticket_id: int) -> Ticket | None:
        return await session.scalar(_with_children(select(Ticket)).where(Ticket.id == ticket_id))


def _enrollment_view(row: Enrollment) -> EnrollmentView:
    return EnrollmentView(
        subject_id=row.subject_id,
        name=row.subject_name,
        upn=row.subject_upn,
        mailbox=row.mailbox,
        paused=row.paused,
        last_success_at=row.last_success_at,
        last_error=row.last_error,
        last_error_kind=row.last_error_kind,
        last_sync_summary=row.last_sync_summary,
    )


def _with_children(query: Select[Ticket]) -> Select[Ticket]:
    return query.options(selectinload(Ticket.decisions), selectinload(Ticket.steps))


def _addresses(person: DirectoryUser) -> list[str]:
    seen: list[str] = []
    for address in [
        person.primary_smtp,
        person.mail,
        person.user_principal_name,
        *person.other_mails,
        *(p.split(":", 1)[1] for p in person.proxy_addresses if ":" in p),
    ]:
        if address and address.lower() not in (a.lower() for a in seen):
            seen.append(address)
    return seen
