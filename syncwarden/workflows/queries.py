"""Reading tickets and enrollments: no writes, no notifications, no authorisation.

Who may see what is :mod:`workflows.access`'s question; these only fetch. The ticket loaders
shared with the commands (a ticket with its decisions and steps, optionally locked for update)
live here too, so every use case loads a ticket the same way.
"""

from __future__ import annotations

from sqlalchemy import Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from syncwarden.workflows.model import TicketStatus
from syncwarden.workflows.ports import TicketView
from syncwarden.workflows.records import Enrollment, Ticket, canonical_object_id, ticket_id_from_ref
from syncwarden.workflows.results import EnrollmentView, PersonStatus
from syncwarden.workflows.views import ticket_view

OPEN_STATUSES = tuple(status.value for status in TicketStatus if status.is_open)


class TicketQueries:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def get_ticket(self, ref: str) -> TicketView | None:
        ticket_id = ticket_id_from_ref(ref)
        if ticket_id is None:
            return None
        async with self._sessions() as session:
            ticket = await load_ticket(session, ticket_id)
            return ticket_view(ticket) if ticket else None

    async def open_tickets(self) -> list[TicketView]:
        async with self._sessions() as session:
            rows = await session.scalars(
                with_children(select(Ticket))
                .where(Ticket.status.in_(OPEN_STATUSES))
                .order_by(Ticket.created_at)
            )
            return [ticket_view(ticket) for ticket in rows.all()]

    async def open_ticket_of(self, subject_id: str) -> TicketView | None:
        async with self._sessions() as session:
            ticket = await session.scalar(
                with_children(select(Ticket)).where(
                    Ticket.subject_id == canonical_object_id(subject_id),
                    Ticket.status.in_(OPEN_STATUSES),
                )
            )
            return ticket_view(ticket) if ticket else None

    async def ticket_by_id(self, ticket_id: int) -> TicketView | None:
        async with self._sessions() as session:
            ticket = await load_ticket(session, ticket_id)
            return ticket_view(ticket) if ticket else None

    async def active_enrollment(self, subject_id: str) -> Enrollment | None:
        async with self._sessions() as session:
            result: Enrollment | None = await session.scalar(
                select(Enrollment).where(
                    Enrollment.subject_id == canonical_object_id(subject_id),
                    Enrollment.active.is_(True),
                )
            )
            return result

    async def status_of(self, person_id: str) -> PersonStatus:
        enrollment = await self.active_enrollment(person_id)
        return PersonStatus(
            open_ticket=await self.open_ticket_of(person_id),
            enrolled_mailbox=enrollment.mailbox if enrollment else None,
            last_sync_at=enrollment.last_success_at if enrollment else None,
            last_error=enrollment.last_error if enrollment else None,
            last_sync_summary=enrollment.last_sync_summary if enrollment else None,
        )

    async def enrollments_of(self, who: str) -> list[EnrollmentView]:
        """The active enrollments of one person, named by object id, UPN or sync address."""
        cleaned = who.strip().lower()
        async with self._sessions() as session:
            rows = await session.scalars(
                select(Enrollment).where(
                    Enrollment.active.is_(True),
                    or_(
                        Enrollment.subject_id == cleaned,
                        func.lower(Enrollment.subject_upn) == cleaned,
                        func.lower(Enrollment.mailbox) == cleaned,
                    ),
                )
            )
            return [enrollment_view(row) for row in rows.all()]

    async def enrollments(self) -> list[EnrollmentView]:
        """Everyone enrolled (active), by name: the registry IT looks at."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(Enrollment)
                .where(Enrollment.active.is_(True))
                .order_by(Enrollment.subject_name)
            )
            return [enrollment_view(row) for row in rows.all()]


def with_children(query: Select[Ticket]) -> Select[Ticket]:
    return query.options(selectinload(Ticket.decisions), selectinload(Ticket.steps))


async def load_ticket(session: AsyncSession, ticket_id: int) -> Ticket | None:
    return await session.scalar(with_children(select(Ticket)).where(Ticket.id == ticket_id))


async def locked_ticket(session: AsyncSession, ticket_id: int) -> Ticket | None:
    """The ticket with its children, its row locked until the transaction ends."""
    return await session.scalar(
        with_children(select(Ticket)).where(Ticket.id == ticket_id).with_for_update()
    )


def enrollment_view(row: Enrollment) -> EnrollmentView:
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
