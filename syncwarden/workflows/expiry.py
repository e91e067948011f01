"""What time does to time-bound access: remind the person before it ends, and end it.

Run by the scheduler (job ``access.expiry``). Each reminder is stamped on the enrollment in the
same commit as its message, and each removal ticket is opened in the same commit as the
enrollment's ``expiry_ticket_id``, with the rows locked: running the check twice, at once on two
replicas, or again after a crash, reminds once and removes once.

An end date that comes while the person has another ticket open (an extension still waiting for
its decision, say) waits for that ticket: an approved extension moves the date, a rejected or
expired one lets the next pass open the removal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from syncwarden.core.logging import get_logger
from syncwarden.core.settings import AccessSettings
from syncwarden.workflows import wording
from syncwarden.workflows.access_terms import latest_day
from syncwarden.workflows.audit import record_audit
from syncwarden.workflows.ports import Notification, NotificationKind
from syncwarden.workflows.records import Enrollment, ticket_ref
from syncwarden.workflows.requests import RequestIntake
from syncwarden.workflows.system_actors import EXPIRY
from syncwarden.workflows.unit_of_work import UnitsOfWork

log = get_logger(__name__)


@dataclass(frozen=True)
class ExpiryPass:
    reminded: int = 0
    removals: int = 0
    waiting: int = 0

    def __str__(self) -> str:
        return (
            f"{self.reminded} reminded, {self.removals} removals opened, "
            f"{self.waiting} waiting for an open ticket"
        )


class AccessExpiry:
    def __init__(
        self,
        units: UnitsOfWork,
        *,
        intake: RequestIntake,
        access: AccessSettings,
        clock: Callable[[], datetime],
        on_steps_queued: Callable[[], None],
    ) -> None:
        self._units = units
        self._intake = intake
        self._access = access
        self._clock = clock
        self._on_steps_queued = on_steps_queued

    async def check(self) -> ExpiryPass:
        """Remind whoever's access ends within ``ACCESS__REMINDER_DAYS``; end what has ended."""
        reminded = await self._remind()
        removals = waiting = 0
        for enrollment_id in await self._ended():
            result = await self._intake.open_system_removal(
                EXPIRY,
                enrollment_id,
                reason="time-bound access ended",
                mark=_mark_expired,
            )
            if result.created:
                removals += 1
            elif result.ticket is not None:
                waiting += 1
        if removals:
            self._on_steps_queued()
        return ExpiryPass(reminded, removals, waiting)

    async def _remind(self) -> int:
        now = self._clock()
        horizon = now + timedelta(days=self._access.reminder_days)
        latest = latest_day(now, self._access.max_days)
        count = 0
        async with self._units() as work:
            rows = await work.session.scalars(
                select(Enrollment)
                .where(
                    Enrollment.active.is_(True),
                    Enrollment.access_until.is_not(None),
                    Enrollment.access_until <= horizon,
                    Enrollment.access_until > now,
                    Enrollment.expiry_reminded_at.is_(None),
                )
                .order_by(Enrollment.id)
                .with_for_update(skip_locked=True)
            )
            for enrollment in rows.all():
                until = enrollment.access_until
                assert until is not None
                enrollment.expiry_reminded_at = now
                last = wording.last_day(until)
                text = (
                    f"Your calendar sync ends after **{last}**. If you still need it, choose "
                    "a new last day and press Extend; it is decided like a new request."
                )
                details = {
                    "until": until.isoformat(),
                    "name": enrollment.subject_name,
                    "latest": latest.isoformat() if latest else "",
                }
                work.to_user(
                    enrollment.subject_id,
                    Notification(NotificationKind.ACCESS_ENDING, None, text, details),
                    key=f"access-ending:{enrollment.id}:{until.isoformat()}",
                )
                record_audit(
                    work.session,
                    actor=EXPIRY.upn,
                    action="access.expiry_reminded",
                    after={"subject": enrollment.subject_upn, "until": until.isoformat()},
                )
                count += 1
        return count

    async def _ended(self) -> list[int]:
        now = self._clock()
        async with self._units.sessions() as session:
            rows = await session.scalars(
                select(Enrollment.id)
                .where(
                    Enrollment.active.is_(True),
                    Enrollment.access_until.is_not(None),
                    Enrollment.access_until <= now,
                    Enrollment.expiry_ticket_id.is_(None),
                )
                .order_by(Enrollment.id)
            )
            return list(rows.all())


async def _mark_expired(_session: AsyncSession, enrollment: Enrollment, ticket_id: int) -> None:
    enrollment.expiry_ticket_id = ticket_id
    log.info("access.expired", enrollment=enrollment.id, ticket=ticket_ref(ticket_id))
