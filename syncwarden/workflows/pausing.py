"""IT pauses or resumes one person's sync without ending their enrollment."""

from __future__ import annotations

from sqlalchemy import select

from syncwarden.workflows.audit import record_audit
from syncwarden.workflows.ports import Person
from syncwarden.workflows.records import Enrollment, canonical_object_id
from syncwarden.workflows.results import ActionOutcome, ActionResult
from syncwarden.workflows.roster import Roster
from syncwarden.workflows.subjects import SubjectFinder
from syncwarden.workflows.unit_of_work import UnitsOfWork


class SyncPausing:
    def __init__(self, units: UnitsOfWork, *, subjects: SubjectFinder, roster: Roster) -> None:
        self._units = units
        self._subjects = subjects
        self._roster = roster

    async def set_paused(self, actor: Person, who: str, *, paused: bool) -> ActionResult:
        """IT pauses or resumes one person's sync; ``who`` is an object id or an address."""
        if not await self._roster.is_it_admin(actor.id):
            return ActionResult(
                ActionOutcome.NOT_ALLOWED, "only IT admins can pause or resume sync"
            )
        person, problem = await self._subjects.resolve(actor, who, must_be_enabled=False)
        if problem or person is None:
            return ActionResult(
                ActionOutcome.NOT_FOUND, problem.message if problem else "nobody found"
            )
        async with self._units() as work:
            row = await work.session.scalar(
                select(Enrollment)
                .where(
                    Enrollment.subject_id == canonical_object_id(person.id),
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
                work.session,
                actor=actor.upn or actor.id,
                action="enrollment.paused" if paused else "enrollment.resumed",
                before={"paused": not paused},
                after={"paused": paused, "subject": person.user_principal_name},
            )
        verb = "paused" if paused else "resumed"
        return ActionResult(ActionOutcome.DONE, f"sync for {person.display_name} is {verb}")
