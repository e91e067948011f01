"""Provisioning from the identity provider: what an Entra ID assignment means for calendar sync.

The identity provider (Entra ID's app provisioning over SCIM) is a second door next to Teams, with
the same tickets, audit and safety. Its requester is a system person, :data:`PROVISIONING`, so
every ticket and audit row says the change came from the directory's assignment:

- an assigned, active person: an enrollment ticket, decided by the assignment itself or by the
  approvers (``SYNCWARDEN_SCIM__DECISION``);
- unassigned, deactivated or deleted: a removal ticket, approved by the unassignment (taking
  access away needs nobody's yes); an enrollment still undecided or not started is withdrawn;
- their work address changed while enrolled, to another address of the same mailbox: a change
  (mover) ticket, decided as enrollments are.

A person enrolled through Teams and assigned in Entra ID is one enrollment: the assignment of an
enrolled person opens nothing. What cannot become a ticket (nobody by that name in the directory,
no scheduling profile, a ticket already open) is recorded in the audit, never raised: the
provisioning service must not retry forever over something only an administrator can fix. A
directory that does not answer is raised (:class:`DirectoryUnavailableError`): nothing was done,
and the same request sent again later will do it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from syncwarden.connectors.errors import ConnectorError, NotFoundError
from syncwarden.connectors.ports import Directory, DirectoryUser
from syncwarden.connectors.scheduling.ports import SchedulingSystem
from syncwarden.core.errors import SyncwardenError
from syncwarden.core.logging import get_logger
from syncwarden.core.settings import ApprovalSettings, ProvisioningSettings
from syncwarden.workflows.audit import record_audit
from syncwarden.workflows.commands import TicketCommands
from syncwarden.workflows.model import TicketKind, TicketStatus
from syncwarden.workflows.ports import Person
from syncwarden.workflows.queries import TicketQueries
from syncwarden.workflows.requests import RequestIntake
from syncwarden.workflows.results import RequestResult
from syncwarden.workflows.roster import Roster
from syncwarden.workflows.subjects import SubjectFinder
from syncwarden.workflows.system_actors import SYSTEM_PREFIX
from syncwarden.workflows.unit_of_work import UnitsOfWork

log = get_logger(__name__)

PROVISIONING = Person(id=f"{SYSTEM_PREFIX}scim", name="Entra ID provisioning")
"""The requester of every ticket the identity provider's provisioning opens: a system actor
(:mod:`workflows.system_actors`), so it may name anyone and is never sent a chat message."""

UNASSIGNED = "unassigned in Entra ID"

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class DirectoryUnavailableError(SyncwardenError):
    """The directory could not be asked who an assignment is about; nothing was done, and the
    identity provider should send the change again later."""


@dataclass(frozen=True)
class Assignment:
    """What the identity provider says about one person: who they are and whether assigned."""

    user_name: str
    active: bool
    external_id: str | None = None
    work_email: str | None = None
    # The directory object id this assignment was resolved to before, if ever.
    directory_id: str | None = None


@dataclass(frozen=True)
class ProvisioningOutcome:
    """What an assignment change did: the person it resolved to and the ticket it opened."""

    directory_id: str | None
    ticket_ref: str | None = None
    message: str = ""


class _ProvisioningRoster(Roster):
    """The roster, with the provisioning requester counted as IT where a ticket command asks:
    it may withdraw an undecided enrollment of someone it no longer assigns, whoever filed it."""

    async def is_it_admin(self, person_id: str) -> bool:
        return person_id == PROVISIONING.id or await super().is_it_admin(person_id)


class ProvisioningIntake:
    def __init__(
        self,
        units: UnitsOfWork,
        *,
        directory: Directory,
        scheduling: SchedulingSystem,
        approvals: ApprovalSettings,
        provisioning: ProvisioningSettings,
        assignment_decides: bool,
        clock: Callable[[], datetime],
        on_steps_queued: Callable[[], None],
    ) -> None:
        self._units = units
        self._directory = directory
        roster = _ProvisioningRoster(directory, approvals)
        self._commands = TicketCommands(
            units,
            roster=roster,
            provisioning=provisioning,
            clock=clock,
            on_steps_queued=on_steps_queued,
        )
        self._queries = TicketQueries(units.sessions)
        self._intake = RequestIntake(
            units,
            subjects=SubjectFinder(directory, scheduling, roster),
            queries=self._queries,
            roster=roster,
            approvals=approvals,
            provisioning=provisioning,
            clock=clock,
            on_steps_queued=on_steps_queued,
        )
        # Why an assignment needs no approver, or None: the approvers decide each enrollment.
        self._approval = "assigned to Syncwarden in Entra ID" if assignment_decides else None

    async def apply(
        self, before: Assignment | None, after: Assignment | None
    ) -> ProvisioningOutcome:
        """Open the ticket that takes the person from ``before`` to ``after`` (None: no record)."""
        current = after or before
        assert current is not None
        person = await self.resolve(current)
        if person is None:
            outcome = ProvisioningOutcome(
                None, message=f"nobody named {current.user_name} is in the directory"
            )
        elif after is None or not after.active:
            outcome = await self._removal(person, before)
        elif before is None or not before.active:
            outcome = self._outcome(
                person,
                await self._intake.request_enrollment(
                    PROVISIONING,
                    subject=person.id,
                    mailbox=self._mailbox(person, after.work_email),
                    approval=self._approval,
                    justification="assigned in Entra ID",
                ),
            )
        else:
            outcome = await self._move(person, before, after)
        await self._audit(before, after, outcome)
        return outcome

    async def remove_unassigned(self, directory_id: str) -> ProvisioningOutcome:
        """The removal an unassignment asked for, opened late: Entra ID sends an unassignment
        once, and one that came while another ticket of the person's was under way could only
        be recorded. The catch-up (:mod:`scim.catch_up`) calls this once that ticket is done."""
        result = await self._intake.request_removal(
            PROVISIONING, subject=directory_id, justification=UNASSIGNED, approval=UNASSIGNED
        )
        ref = result.ticket.ref if result.ticket is not None and result.created else None
        message = result.message or "; ".join(p.message for p in result.problems)
        outcome = ProvisioningOutcome(directory_id, ticket_ref=ref, message=message)
        async with self._units() as work:
            record_audit(
                work.session,
                actor=PROVISIONING.id,
                action="provisioning.caught_up",
                ticket_ref=outcome.ticket_ref,
                after={"directory_id": directory_id, "outcome": outcome.message},
            )
        return outcome

    async def resolve(self, assignment: Assignment) -> DirectoryUser | None:
        """The directory person: by the object id seen before, an object id sent as externalId,
        then the userName (a UPN or address) and the work address. Raises
        :class:`DirectoryUnavailableError` when the directory does not answer."""
        candidates = [assignment.directory_id]
        if assignment.external_id and _GUID.match(assignment.external_id):
            candidates.append(assignment.external_id)
        candidates.extend([assignment.user_name, assignment.work_email])
        for candidate in candidates:
            if not candidate:
                continue
            try:
                if "@" in candidate:
                    found = await self._directory.find_user_by_address(candidate)
                else:
                    found = await self._directory.get_user(candidate)
            except NotFoundError:
                continue
            except ConnectorError as error:
                log.warning("provisioning.directory_failed", error=str(error))
                raise DirectoryUnavailableError(
                    "the directory could not be reached; nothing was changed, try again later"
                ) from None
            if found is not None:
                return found
        return None

    async def _removal(
        self, person: DirectoryUser, before: Assignment | None
    ) -> ProvisioningOutcome:
        if before is not None and not before.active:
            return ProvisioningOutcome(person.id, message="already unassigned")
        # A removal takes access away: the identity provider's word is enough, whatever the
        # decision setting says about enrollments.
        result = await self._intake.request_removal(
            PROVISIONING, subject=person.id, justification=UNASSIGNED, approval=UNASSIGNED
        )
        pending = result.ticket
        if (
            not result.created
            and pending is not None
            and pending.kind == TicketKind.ENROLL.value
            and pending.status
            in (TicketStatus.AWAITING_APPROVAL.value, TicketStatus.APPROVED.value)
        ):
            # Unassigned before the enrollment was decided or started: it is withdrawn, so
            # nothing is provisioned for someone the identity provider no longer lists.
            cancelled = await self._commands.cancel(pending.ref, PROVISIONING, reason=UNASSIGNED)
            return ProvisioningOutcome(
                person.id, ticket_ref=pending.ref, message=f"{pending.ref}: {cancelled.message}"
            )
        return self._outcome(person, result)

    async def _move(
        self, person: DirectoryUser, before: Assignment, after: Assignment
    ) -> ProvisioningOutcome:
        """A mover: the work address (or the userName that names it) changed."""
        same_email = (before.work_email or "").lower() == (after.work_email or "").lower()
        if same_email and before.user_name.lower() == after.user_name.lower():
            return ProvisioningOutcome(person.id, message="nothing that calendar sync uses changed")
        enrollment = await self._queries.active_enrollment(person.id)
        wanted = self._mailbox(person, after.work_email)
        if enrollment is None:
            return ProvisioningOutcome(person.id, message="not enrolled; nothing to move")
        if wanted is None or wanted.lower() == enrollment.mailbox.lower():
            return ProvisioningOutcome(
                person.id, message=f"still syncing into {enrollment.mailbox}"
            )
        open_ticket = await self._queries.open_ticket_of(person.id)
        if open_ticket is not None:
            return ProvisioningOutcome(person.id, message=f"{open_ticket.ref} is still open")
        # The mover rules: the work address still reaches the same mailbox (checked above), so
        # the change follows the assignment's decision like an enrollment does.
        return self._outcome(
            person,
            await self._intake.open_ticket(
                TicketKind.CHANGE,
                PROVISIONING,
                person,
                mailbox=wanted,
                previous_mailbox=enrollment.mailbox,
                profile=await self._intake.enrolled_profile(person, enrollment),
                justification="work address changed in Entra ID",
                approval=self._approval,
            ),
        )

    @staticmethod
    def _mailbox(person: DirectoryUser, email: str | None) -> str | None:
        """The work address to sync into when it reaches the person's mailbox; else their primary
        (an outside address from the identity provider is not a mailbox to sync into)."""
        return person.mailbox_address(email) if email else None

    @staticmethod
    def _outcome(person: DirectoryUser, result: RequestResult) -> ProvisioningOutcome:
        ref = result.ticket.ref if result.ticket is not None else None
        message = result.message or "; ".join(p.message for p in result.problems)
        return ProvisioningOutcome(
            person.id, ticket_ref=ref if result.created else None, message=message
        )

    async def _audit(
        self, before: Assignment | None, after: Assignment | None, outcome: ProvisioningOutcome
    ) -> None:
        """One row per assignment change, whether or not it opened a ticket."""
        async with self._units() as work:
            record_audit(
                work.session,
                actor=PROVISIONING.id,
                action="provisioning.assignment",
                ticket_ref=outcome.ticket_ref,
                before=_described(before),
                after={
                    **(_described(after) or {}),
                    "outcome": outcome.message,
                    "directory_id": outcome.directory_id,
                },
            )


def _described(assignment: Assignment | None) -> dict[str, object] | None:
    if assignment is None:
        return None
    return {
        "userName": assignment.user_name,
        "externalId": assignment.external_id,
        "email": assignment.work_email,
        "active": assignment.active,
    }
