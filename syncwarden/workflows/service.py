"""The access-request use cases behind one object, as the bot and the CLI call them.

Each job lives in a module of its own: asking (:mod:`workflows.requests`), deciding and acting
(:mod:`workflows.commands`), what time does to undecided requests (:mod:`workflows.approval_clock`),
pausing (:mod:`workflows.pausing`), reading (:mod:`workflows.queries`), who may change what
(:mod:`workflows.policy`) and who hears what (:mod:`workflows.announcements`). Every change and
its notifications commit together through a :class:`workflows.unit_of_work.UnitOfWork`. This
class only wires them and keeps one surface for callers.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime

from syncwarden.connectors.ports import Directory, DirectoryChanges
from syncwarden.connectors.scheduling.ports import SchedulingSystem
from syncwarden.core.db import utc_now
from syncwarden.core.settings import (
    AccessSettings,
    ApprovalSettings,
    ProvisioningSettings,
    ReviewSettings,
)
from syncwarden.workflows.approval_clock import ApprovalClock
from syncwarden.workflows.commands import TicketCommands
from syncwarden.workflows.expiry import AccessExpiry, ExpiryPass
from syncwarden.workflows.paging import (
    Page,
    TicketsCursor,
    TicketsFilter,
    UsersCursor,
    UsersFilter,
)
from syncwarden.workflows.pausing import SyncPausing
from syncwarden.workflows.ports import Person, TicketView
from syncwarden.workflows.queries import TicketQueries
from syncwarden.workflows.repairs import AccessRepairs, PersonReader
from syncwarden.workflows.requests import Mark, RequestIntake
from syncwarden.workflows.results import (
    ActionOutcome,
    ActionResult,
    EnrollmentForm,
    EnrollmentView,
    OpenRequest,
    PersonStatus,
    RequestProblem,
    RequestResult,
)
from syncwarden.workflows.review_decisions import ReviewDecisions
from syncwarden.workflows.review_lifecycle import AccessReviews
from syncwarden.workflows.review_removals import ReviewRemovals
from syncwarden.workflows.roster import Roster
from syncwarden.workflows.subjects import SubjectFinder
from syncwarden.workflows.unit_of_work import UnitsOfWork

__all__ = [
    "ActionOutcome",
    "ActionResult",
    "EnrollmentForm",
    "EnrollmentView",
    "OpenRequest",
    "PersonStatus",
    "RequestProblem",
    "RequestResult",
    "WorkflowService",
]


class WorkflowService:
    def __init__(
        self,
        units: UnitsOfWork,
        *,
        directory: Directory,
        scheduling: SchedulingSystem,
        roster: Roster,
        approvals: ApprovalSettings,
        provisioning: ProvisioningSettings,
        clock: Callable[[], datetime] = utc_now,
        on_steps_queued: Callable[[], None] | None = None,
        access: AccessSettings | None = None,
        reviews: ReviewSettings | None = None,
        managers: DirectoryChanges | None = None,
        fresh_directory: PersonReader | None = None,
    ) -> None:
        """``reviews`` and ``managers`` (each person's manager, for manager reviews) set up
        :attr:`reviews` (starting, reminding, closing) and :attr:`review_decisions` (a
        reviewer's clicks); ``access`` sets the rules of time-bound access."""
        steps_queued = on_steps_queued or (lambda: None)
        self.access = access or AccessSettings()
        subjects = SubjectFinder(directory, scheduling, roster)
        self._queries = TicketQueries(units.sessions)
        self._intake = RequestIntake(
            units,
            subjects=subjects,
            queries=self._queries,
            roster=roster,
            approvals=approvals,
            provisioning=provisioning,
            clock=clock,
            on_steps_queued=steps_queued,
            access=self.access,
        )
        self._expiry = AccessExpiry(
            units,
            intake=self._intake,
            access=self.access,
            clock=clock,
            on_steps_queued=steps_queued,
        )
        review_removals = ReviewRemovals(units, intake=self._intake, on_steps_queued=steps_queued)
        self.reviews = AccessReviews(
            units,
            roster=roster,
            removals=review_removals,
            settings=reviews or ReviewSettings(),
            managers=managers,
            clock=clock,
        )
        self.review_decisions = ReviewDecisions(
            units, roster=roster, removals=review_removals, clock=clock
        )
        self._commands = TicketCommands(
            units,
            roster=roster,
            provisioning=provisioning,
            clock=clock,
            on_steps_queued=steps_queued,
        )
        self._approval_clock = ApprovalClock(units, roster=roster, approvals=approvals, clock=clock)
        self._pausing = SyncPausing(units, subjects=subjects, roster=roster)
        # Repairs read the person fresh (a mover's new address must not come from a cache).
        self.repairs = AccessRepairs(
            self._intake, self._queries, fresh_directory or directory, roster
        )

    # ----------------------------------------------------------------------------- asking

    async def request_enrollment(
        self,
        requester: Person,
        *,
        subject: str | None = None,
        mailbox: str | None = None,
        profile_id: str | None = None,
        justification: str = "",
        until: date | None = None,
    ) -> RequestResult:
        return await self._intake.request_enrollment(
            requester,
            subject=subject,
            mailbox=mailbox,
            profile_id=profile_id,
            justification=justification,
            until=until,
        )

    async def request_extension(
        self,
        requester: Person,
        *,
        until: date | None,
        subject: str | None = None,
        justification: str = "",
    ) -> RequestResult:
        return await self._intake.request_extension(
            requester, until=until, subject=subject, justification=justification
        )

    async def check_access_expiry(self) -> ExpiryPass:
        """Remind people whose time-bound access ends soon; open removals for ended access."""
        return await self._expiry.check()

    async def open_system_removal(
        self,
        system: Person,
        enrollment_id: int,
        *,
        reason: str,
        mark: Mark,
    ) -> RequestResult:
        return await self._intake.open_system_removal(
            system, enrollment_id, reason=reason, mark=mark
        )

    async def request_removal(
        self, requester: Person, *, subject: str | None = None, justification: str = ""
    ) -> RequestResult:
        return await self._intake.request_removal(
            requester, subject=subject, justification=justification
        )

    async def request_change(
        self,
        requester: Person,
        *,
        mailbox: str,
        subject: str | None = None,
        justification: str = "",
    ) -> RequestResult:
        return await self._intake.request_change(
            requester, mailbox=mailbox, subject=subject, justification=justification
        )

    async def enrollment_form(
        self, requester: Person, *, subject: str | None = None
    ) -> EnrollmentForm:
        return await self._intake.enrollment_form(requester, subject=subject)

    # ----------------------------------------------------------------------------- acting

    async def decide(
        self,
        ref: str,
        approver: Person,
        *,
        approve: bool,
        comment: str = "",
        version: int | None = None,
    ) -> ActionResult:
        return await self._commands.decide(
            ref, approver, approve=approve, comment=comment, version=version
        )

    async def cancel(self, ref: str, actor: Person, *, reason: str = "") -> ActionResult:
        return await self._commands.cancel(ref, actor, reason=reason)

    async def retry(self, ref: str, actor: Person) -> ActionResult:
        return await self._commands.retry(ref, actor)

    async def manual_step_done(self, ref: str, actor: Person) -> ActionResult:
        return await self._commands.manual_step_done(ref, actor)

    async def set_paused(self, actor: Person, who: str, *, paused: bool) -> ActionResult:
        return await self._pausing.set_paused(actor, who, paused=paused)

    async def check_pending(self) -> dict[str, int]:
        return await self._approval_clock.check_pending()

    async def show_waiting_in_channel(self, channel_key: str) -> int:
        return await self._approval_clock.show_waiting_in_channel(channel_key)

    # ----------------------------------------------------------------------------- reading

    async def get_ticket(self, ref: str) -> TicketView | None:
        return await self._queries.get_ticket(ref)

    async def status_of(self, person_id: str) -> PersonStatus:
        return await self._queries.status_of(person_id)

    async def enrollments_of(self, who: str) -> list[EnrollmentView]:
        return await self._queries.enrollments_of(who)

    async def users_page(
        self, wanted: UsersFilter, after: UsersCursor | None = None
    ) -> Page[EnrollmentView]:
        return await self._queries.users_page(wanted, after)

    async def tickets_page(
        self, wanted: TicketsFilter, after: TicketsCursor | None = None
    ) -> Page[TicketView]:
        return await self._queries.tickets_page(wanted, after)
