"""Asking: the request form, and turning a valid request into a ticket.

A request is checked against the directory and the scheduling system before anything is written;
what is wrong comes back as :class:`RequestProblem` s naming the field. A valid request becomes a
ticket, its audit row and its announcements (the approval cards, IT's status line) in one commit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date, datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from syncwarden.connectors.ports import DirectoryUser
from syncwarden.connectors.scheduling.ports import Profile
from syncwarden.core.settings import AccessSettings, ApprovalSettings, ProvisioningSettings
from syncwarden.workflows.access_terms import granted_until
from syncwarden.workflows.announcements import announce_created, ask_for_approval
from syncwarden.workflows.audit import record_audit
from syncwarden.workflows.model import TicketKind, TicketStatus
from syncwarden.workflows.ports import NotificationKind, Person
from syncwarden.workflows.queries import TicketQueries
from syncwarden.workflows.records import Enrollment, Ticket
from syncwarden.workflows.results import EnrollmentForm, RequestProblem, RequestResult
from syncwarden.workflows.roster import Roster
from syncwarden.workflows.subjects import SubjectFinder
from syncwarden.workflows.text import storable_text
from syncwarden.workflows.transitions import approve_and_start
from syncwarden.workflows.unit_of_work import UnitsOfWork
from syncwarden.workflows.views import ticket_view

# Stamps a system removal's ticket on the caller's own rows, in the ticket's commit.
Mark = Callable[[AsyncSession, Enrollment, int], Awaitable[None]]


class RequestIntake:
    def __init__(
        self,
        units: UnitsOfWork,
        *,
        subjects: SubjectFinder,
        queries: TicketQueries,
        roster: Roster,
        approvals: ApprovalSettings,
        provisioning: ProvisioningSettings,
        clock: Callable[[], datetime],
        on_steps_queued: Callable[[], None],
        access: AccessSettings | None = None,
    ) -> None:
        self._access = access or AccessSettings()
        self._units = units
        self._subjects = subjects
        self._queries = queries
        self._roster = roster
        self._approvals = approvals
        self._provisioning = provisioning
        self._clock = clock
        self._on_steps_queued = on_steps_queued

    async def request_enrollment(
        self,
        requester: Person,
        *,
        subject: str | None = None,
        mailbox: str | None = None,
        profile_id: str | None = None,
        justification: str = "",
        approval: str | None = None,
        until: date | None = None,
    ) -> RequestResult:
        """Validate a request to enroll ``subject`` (default: the requester) and open a ticket.

        ``approval`` is why no approver is asked, when the caller has decided that (see
        :meth:`open_ticket`). ``until`` is the last day of time-bound access (see
        :mod:`workflows.access_terms`)."""
        access_until, until_problem = granted_until(
            until, now=self._clock(), max_days=self._access.max_days
        )
        if until_problem:
            return RequestResult(problems=(until_problem,))
        person, problem = await self._subjects.resolve(requester, subject)
        if problem:
            return RequestResult(problems=(problem,))
        assert person is not None
        existing = await self._existing_answer(person, TicketKind.ENROLL)
        if existing:
            return existing
        problems: list[RequestProblem] = []
        problems.extend(await self._subjects.mailbox_problems(person))
        chosen_mailbox, mailbox_problem = self._subjects.chosen_mailbox(person, mailbox)
        if mailbox_problem:
            problems.append(mailbox_problem)
        profile, candidates, profile_problem = await self._subjects.choose_profile(
            person, profile_id
        )
        if profile_problem:
            problems.append(profile_problem)
        if problems:
            return RequestResult(problems=tuple(problems), profile_candidates=tuple(candidates))
        assert profile is not None
        return await self.open_ticket(
            TicketKind.ENROLL,
            requester,
            person,
            mailbox=chosen_mailbox,
            previous_mailbox=None,
            profile=profile,
            justification=justification,
            approval=approval,
            access_until=access_until,
        )

    async def request_extension(
        self,
        requester: Person,
        *,
        until: date | None,
        subject: str | None = None,
        justification: str = "",
    ) -> RequestResult:
        """Ask to keep time-bound access until a later last day; decided like a new request."""
        access_until, until_problem = granted_until(
            until, now=self._clock(), max_days=self._access.max_days
        )
        if until_problem:
            return RequestResult(problems=(until_problem,))
        found = await self._enrolled_subject(requester, subject, must_be_enabled=True)
        if isinstance(found, RequestResult):
            return found
        person, enrollment = found
        if enrollment.access_until is None:
            message = f"{person.display_name}'s calendar sync has no end date"
            return RequestResult(problems=(RequestProblem("until", message),))
        if access_until is None or access_until <= enrollment.access_until:
            message = "the new last day must be after the current one"
            return RequestResult(problems=(RequestProblem("until", message),))
        return await self._ticket_about(
            TicketKind.EXTEND,
            requester,
            person,
            enrollment,
            justification=justification,
            access_until=access_until,
        )

    async def open_system_removal(
        self,
        system: Person,
        enrollment_id: int,
        *,
        reason: str,
        mark: Mark,
    ) -> RequestResult:
        """A removal Syncwarden itself opens (access ended, a review said remove): no approval,
        the steps queued at once, and ``mark(enrollment, ticket_id)`` applied in the same commit
        so that the caller's "opened once" stamp and the ticket cannot part.

        The person is described from the enrollment, not the directory: someone whose account
        is gone must still lose access. Returns a result with ``created`` False when the person
        already has an open ticket (the caller tries again later) or is no longer enrolled."""
        enrollment = await self._queries.enrollment_by_id(enrollment_id)
        if enrollment is None or not enrollment.active:
            return RequestResult(message="not enrolled any more")
        person = recorded_person(enrollment)
        open_ticket = await self._queries.open_ticket_of(person.id)
        if open_ticket:
            return RequestResult(ticket=open_ticket, message=f"{open_ticket.ref} is still open")
        return await self._ticket_about(
            TicketKind.REMOVE,
            system,
            person,
            enrollment,
            justification=reason,
            approval=reason,
            on_opened=mark,
            enrollment_id=enrollment_id,
        )

    async def request_removal(
        self,
        requester: Person,
        *,
        subject: str | None = None,
        justification: str = "",
        approval: str | None = None,
    ) -> RequestResult:
        found = await self._enrolled_subject(requester, subject, must_be_enabled=False)
        if isinstance(found, RequestResult):
            return found
        person, enrollment = found
        return await self._ticket_about(
            TicketKind.REMOVE,
            requester,
            person,
            enrollment,
            justification=justification,
            approval=approval,
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
        chosen, mailbox_problem = self._subjects.chosen_mailbox(person, mailbox)
        if mailbox_problem:
            return RequestResult(problems=(mailbox_problem,))
        if chosen.lower() == enrollment.mailbox.lower():
            return RequestResult(
                problems=(RequestProblem("mailbox", f"calendar sync already uses {chosen}"),)
            )
        profile = await self.enrolled_profile(person, enrollment)
        return await self.open_ticket(
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
        person, problem = await self._subjects.resolve(requester, subject)
        if problem:
            return EnrollmentForm(None, problems=(problem,))
        assert person is not None
        existing = await self._existing_answer(person, TicketKind.ENROLL)
        if existing:
            return EnrollmentForm(person, existing=existing.ticket, message=existing.message)
        problems = await self._subjects.mailbox_problems(person)
        _, candidates, profile_problem = await self._subjects.choose_profile(person, None)
        if profile_problem and not candidates:
            problems.append(profile_problem)
        primary = person.primary_smtp or person.user_principal_name
        aliases = tuple(a for a in person.mailbox_addresses if a.lower() != primary.lower())
        return EnrollmentForm(
            person,
            addresses=(primary, *aliases),
            primary=primary,
            profiles=tuple(candidates),
            problems=tuple(problems),
        )

    async def _enrolled_subject(
        self, requester: Person, subject: str | None, *, must_be_enabled: bool
    ) -> tuple[DirectoryUser, Enrollment] | RequestResult:
        """The enrolled person a removal or change is about, or the answer explaining why not."""
        person, problem = await self._subjects.resolve(
            requester, subject, must_be_enabled=must_be_enabled
        )
        if problem:
            return RequestResult(problems=(problem,))
        assert person is not None
        open_ticket = await self._queries.open_ticket_of(person.id)
        if open_ticket:
            return RequestResult(
                ticket=open_ticket,
                message=f"{open_ticket.ref} is still open for {person.display_name}",
            )
        enrollment = await self._queries.active_enrollment(person.id)
        if enrollment is None:
            message = f"{person.display_name} is not enrolled in calendar sync"
            return RequestResult(problems=(RequestProblem("subject", message),))
        return person, enrollment

    async def enrolled_profile(self, person: DirectoryUser, enrollment: Enrollment) -> Profile:
        """The enrollment's profile with its name (the cards show names, never internal ids):
        from the ticket that last set it up, else from the scheduling system."""
        for ticket_id in (enrollment.updated_by_ticket, enrollment.created_by_ticket):
            view = await self._queries.ticket_by_id(ticket_id) if ticket_id else None
            if view is not None and view.profile_id == enrollment.profile_id and view.profile_name:
                return Profile(enrollment.profile_id, view.profile_name, None)
        chosen, _, _ = await self._subjects.choose_profile(person, enrollment.profile_id)
        if chosen is not None:
            return chosen
        return Profile(enrollment.profile_id, "", None)

    async def _ticket_about(
        self,
        kind: TicketKind,
        requester: Person,
        person: DirectoryUser,
        enrollment: Enrollment,
        *,
        justification: str,
        approval: str | None = None,
        access_until: datetime | None = None,
        on_opened: Mark | None = None,
        enrollment_id: int | None = None,
    ) -> RequestResult:
        """A ticket about what ``person`` is enrolled with now: its mailbox and its profile."""
        profile = await self.enrolled_profile(person, enrollment)
        return await self.open_ticket(
            kind,
            requester,
            person,
            mailbox=enrollment.mailbox,
            previous_mailbox=None,
            profile=profile,
            justification=justification,
            approval=approval,
            access_until=access_until,
            on_opened=on_opened,
            enrollment_id=enrollment_id,
        )

    async def _existing_answer(
        self, person: DirectoryUser, kind: TicketKind
    ) -> RequestResult | None:
        open_ticket = await self._queries.open_ticket_of(person.id)
        if open_ticket:
            return RequestResult(
                ticket=open_ticket,
                message=f"{open_ticket.ref} is already open for {person.display_name}",
            )
        if kind is TicketKind.ENROLL:
            enrollment = await self._queries.active_enrollment(person.id)
            if enrollment is not None:
                view = (
                    await self._queries.ticket_by_id(enrollment.created_by_ticket)
                    if enrollment.created_by_ticket
                    else None
                )
                message = (
                    f"{person.display_name} is already enrolled (syncing into {enrollment.mailbox})"
                )
                return RequestResult(
                    ticket=view, problems=(RequestProblem("subject", message),), message=message
                )
        return None

    async def open_ticket(
        self,
        kind: TicketKind,
        requester: Person,
        person: DirectoryUser,
        *,
        mailbox: str,
        previous_mailbox: str | None,
        profile: Profile,
        justification: str,
        approval: str | None = None,
        access_until: datetime | None = None,
        on_opened: Mark | None = None,
        enrollment_id: int | None = None,
    ) -> RequestResult:
        """Write a checked request as a ticket, with its audit row and announcements.

        ``approval`` names why no approver is asked: an IT admin's own repair, or a change
        reconciliation makes by itself (a leaver after the grace period, a mover). Without it
        the approvers decide, unless policy lets IT's requests on someone's behalf through.
        ``access_until`` is when time-bound access ends; ``on_opened`` stamps the new ticket
        on the caller's rows (the enrollment ``enrollment_id``) in the ticket's own commit.
        """
        on_behalf = requester.id.lower() != person.id.lower()
        if (
            approval is None
            and on_behalf
            and self._approvals.auto_approve_it_on_behalf
            and await self._roster.is_it_admin(requester.id)
        ):
            approval = "filed by IT; no approval needed"
        auto_approve = approval is not None
        approvers = frozenset() if auto_approve else await self._roster.approvers()
        try:
            async with self._units() as work:
                now = self._clock()
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
                    justification=storable_text(justification),
                    mailbox=mailbox,
                    previous_mailbox=previous_mailbox,
                    profile_id=profile.id,
                    profile_name=profile.name,
                    required_approvals=self._approvals.required_approvals,
                    access_until=access_until,
                    created_at=now,
                    decisions=[],
                    steps=[],
                )
                work.session.add(ticket)
                await work.session.flush()
                record_audit(
                    work.session,
                    actor=requester.upn or requester.id,
                    action=f"ticket.created.{kind.value}",
                    ticket_ref=ticket.ref,
                    after={
                        "subject": person.user_principal_name,
                        "mailbox": mailbox,
                        "profile": profile.id,
                        **({"until": access_until.isoformat()} if access_until else {}),
                    },
                )
                if on_opened is not None and enrollment_id is not None:
                    marked = await work.session.get(Enrollment, enrollment_id, with_for_update=True)
                    if marked is not None:
                        await on_opened(work.session, marked, ticket.id)
                if auto_approve:
                    approve_and_start(
                        work,
                        ticket,
                        requester,
                        self._provisioning,
                        now=now,
                        comment=approval or "",
                    )
                else:
                    ask_for_approval(work, ticket, approvers, NotificationKind.APPROVAL_REQUESTED)
                    announce_created(work, ticket)
                await work.session.flush()
                view = ticket_view(ticket)
        except IntegrityError:
            # Another request for the same person won the race; answer with its ticket.
            winner = await self._queries.open_ticket_of(person.id)
            return RequestResult(
                ticket=winner, message=f"{person.display_name} already has an open request"
            )
        if auto_approve:
            self._on_steps_queued()
        return RequestResult(ticket=view, created=True, message=f"{view.ref} created")


def recorded_person(enrollment: Enrollment, *, enabled: bool = True) -> DirectoryUser:
    """The person as their enrollment recorded them, for the tickets that must not depend on
    the directory (someone whose account is gone must still lose access)."""
    return DirectoryUser(
        id=enrollment.subject_id,
        display_name=enrollment.subject_name,
        user_principal_name=enrollment.subject_upn,
        mail=enrollment.mailbox,
        account_enabled=enabled,
    )
