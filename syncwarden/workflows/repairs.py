"""Repairs of access drift, each a ticket: what IT chooses on a drift finding, and what
reconciliation does by itself (a leaver's removal after the grace period, following a mover).

A repair goes through the same ticket machinery as a request, so it has a number, an audit trail,
durable steps and a card; it skips the approvers because the person who chose it is IT (checked
here, by who they are, never by what a card says) or because policy made it automatic. A repair
for someone who already has an open ticket answers with that ticket, so choosing a fix twice
has one effect.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from syncwarden.connectors.errors import ConnectorError, NotFoundError
from syncwarden.connectors.ports import DirectoryUser
from syncwarden.connectors.scheduling.ports import Profile
from syncwarden.workflows.model import TicketKind
from syncwarden.workflows.ports import Person
from syncwarden.workflows.queries import TicketQueries
from syncwarden.workflows.records import Enrollment
from syncwarden.workflows.requests import RequestIntake, recorded_person
from syncwarden.workflows.results import RequestProblem, RequestResult
from syncwarden.workflows.roster import Roster
from syncwarden.workflows.system_actors import LEAVER_REMOVAL, is_system


class Fix(StrEnum):
    ADOPT = "adopt"  # record an enrollment for a member added by hand
    REMOVE_FROM_GROUP = "remove_from_group"
    READD = "readd"  # put an enrolled person back into the group
    END_ENROLLMENT = "end_enrollment"  # a removal ticket
    REMAP = "remap"  # write the scheduling mapping again
    UPDATE_ADDRESS = "update_address"  # follow a mover to their new primary address


FIX_LABELS = {
    Fix.ADOPT: "Adopt",
    Fix.REMOVE_FROM_GROUP: "Remove from group",
    Fix.READD: "Re-add",
    Fix.END_ENROLLMENT: "End enrollment",
    Fix.REMAP: "Re-map",
    Fix.UPDATE_ADDRESS: "Follow new address",
}

_ONE_STEP_REPAIRS = {Fix.READD: TicketKind.READD, Fix.REMAP: TicketKind.REMAP}


class PersonReader(Protocol):
    async def get_user(self, id_or_upn: str) -> DirectoryUser: ...


class AccessRepairs:
    def __init__(
        self,
        intake: RequestIntake,
        queries: TicketQueries,
        directory: PersonReader,
        roster: Roster,
    ) -> None:
        self._intake = intake
        self._queries = queries
        self._directory = directory
        self._roster = roster

    async def choose(self, fix: Fix, subject_id: str, actor: Person) -> RequestResult:
        """IT's choice on a finding, from a card or a command: refused unless ``actor`` is an
        IT admin (or the service itself, for the command line and automatic fixes)."""
        if not is_system(actor.id) and not await self._roster.is_it_admin(actor.id):
            return _problem("only IT admins can fix access drift")
        reason = (
            f"chosen by {actor.name} (IT) on a drift finding; no approval needed"
            if not is_system(actor.id)
            else f"{actor.name}: no approval needed"
        )
        return await self.carry_out(fix, subject_id, actor, reason=reason)

    async def carry_out(
        self, fix: Fix, subject_id: str, actor: Person, *, reason: str
    ) -> RequestResult:
        """Open the ticket that carries out ``fix``, approved for ``reason``. The caller has
        decided it may (:meth:`choose` checks; reconciliation's own fixes are policy)."""
        if fix is Fix.ADOPT:
            return await self._intake.request_enrollment(
                actor, subject=subject_id, approval=reason, justification="adopted from the group"
            )
        if fix is Fix.REMOVE_FROM_GROUP:
            return await self._ungroup(subject_id, actor, reason)
        # A leaver's removal reads nothing from the directory: the enrollment says who they
        # were, and a thousand leavers at once must not be a thousand Graph reads.
        enrolled = await self._enrolled(subject_id, read_directory=actor != LEAVER_REMOVAL)
        if isinstance(enrolled, RequestResult):
            return enrolled
        person, enrollment = enrolled
        kind, mailbox, previous = TicketKind.REMOVE, enrollment.mailbox, None
        if fix is Fix.UPDATE_ADDRESS:
            new = (person.primary_smtp or "").strip()
            if not person.account_enabled or not new:
                return _problem(f"{person.display_name} has no primary address to follow")
            if new.lower() == enrollment.mailbox.lower():
                return _problem(f"calendar sync already uses {new}")
            kind, mailbox, previous = TicketKind.CHANGE, new, enrollment.mailbox
        elif fix in _ONE_STEP_REPAIRS:
            kind = _ONE_STEP_REPAIRS[fix]
        return await self._intake.open_ticket(
            kind,
            actor,
            person,
            mailbox=mailbox,
            previous_mailbox=previous,
            profile=await self._intake.enrolled_profile(person, enrollment),
            justification=reason,
            approval=reason,
        )

    async def _ungroup(self, subject_id: str, actor: Person, reason: str) -> RequestResult:
        if await self._queries.active_enrollment(subject_id) is not None:
            return _problem("they are enrolled: end the enrollment instead")
        try:
            person = await self._directory.get_user(subject_id)
        except NotFoundError:
            return _problem("they are no longer in the directory, so in no group either")
        except ConnectorError:
            return _problem("the directory could not be reached; try again in a minute")
        open_ticket = await self._queries.open_ticket_of(person.id)
        if open_ticket is not None:
            return RequestResult(
                ticket=open_ticket, message=f"{open_ticket.ref} is already open for them"
            )
        return await self._intake.open_ticket(
            TicketKind.UNGROUP,
            actor,
            person,
            mailbox=person.primary_smtp or person.user_principal_name,
            previous_mailbox=None,
            profile=Profile("", "", None),
            justification=reason,
            approval=reason,
        )

    async def _enrolled(
        self, subject_id: str, *, read_directory: bool = True
    ) -> tuple[DirectoryUser, Enrollment] | RequestResult:
        """The enrolled person, as the directory has them, or, when it is not asked or no
        longer knows them (a deleted leaver), as their enrollment recorded them."""
        enrollment = await self._queries.active_enrollment(subject_id)
        if enrollment is None:
            return _problem("they are not enrolled in calendar sync")
        open_ticket = await self._queries.open_ticket_of(subject_id)
        if open_ticket is not None:
            return RequestResult(
                ticket=open_ticket,
                message=f"{open_ticket.ref} is already open for {open_ticket.subject.name}",
            )
        recorded = recorded_person(enrollment, enabled=False)
        if not read_directory:
            return recorded, enrollment
        try:
            return await self._directory.get_user(subject_id), enrollment
        except NotFoundError:
            return recorded, enrollment
        except ConnectorError:
            return _problem("the directory could not be reached; try again in a minute")


def _problem(message: str) -> RequestResult:
    return RequestResult(problems=(RequestProblem("subject", message),), message=message)
