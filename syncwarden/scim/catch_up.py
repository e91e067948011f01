"""Unassignments that could not be carried out when they came, carried out now.

Entra ID sends a change once and considers it done. An unassignment that arrives while the
person has another ticket under way (their enrollment still provisioning, say) can only be
recorded: opening a second ticket for one person is refused. Without a second look the person
would keep calendar sync the identity provider took away. The catch-up finds everyone the
provisioned records say is unassigned but who is still enrolled with no ticket open, and opens
their removal. Running it twice, or on two replicas at once, opens one ticket: a person has at
most one open ticket.
"""

from __future__ import annotations

from sqlalchemy import and_, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from syncwarden.core.logging import get_logger
from syncwarden.scim.records import ScimUser
from syncwarden.workflows.provisioning import ProvisioningIntake
from syncwarden.workflows.queries import IS_OPEN
from syncwarden.workflows.records import Enrollment, Ticket

log = get_logger(__name__)


class UnassignedCatchUp:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], intake: ProvisioningIntake
    ) -> None:
        self._sessions = sessions
        self._intake = intake

    async def run(self) -> str:
        """Open the removals still owed; what was done, for the job's log line."""
        owed = await self._owed()
        opened = 0
        for directory_id in owed:
            outcome = await self._intake.remove_unassigned(directory_id)
            opened += outcome.ticket_ref is not None
        if owed:
            log.info("scim.caught_up", owed=len(owed), opened=opened)
        return f"{opened} removals opened for unassignments that came while a ticket was open"

    async def _owed(self) -> list[str]:
        enrolled = and_(
            Enrollment.active.is_(True),
            Enrollment.subject_id == func.lower(ScimUser.directory_id),
        )
        ticket_open = and_(Ticket.subject_id == func.lower(ScimUser.directory_id), IS_OPEN)
        async with self._sessions() as session:
            rows = await session.scalars(
                select(ScimUser.directory_id)
                .where(
                    ScimUser.active.is_(False),
                    ScimUser.directory_id.is_not(None),
                    exists().where(enrolled),
                    ~exists().where(ticket_open),
                )
                .order_by(ScimUser.directory_id)
            )
            return [directory_id for directory_id in rows.all() if directory_id]
