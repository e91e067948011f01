"""Reading tickets and enrollments: no writes, no notifications, no authorisation.

Who may see what is :mod:`workflows.access`'s question; these only fetch. The ticket loaders
shared with the commands (a ticket with its decisions and steps, optionally locked for update)
live here too, so every use case loads a ticket the same way.
"""

from __future__ import annotations

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    and_,
    bindparam,
    literal,
    or_,
    select,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import InstrumentedAttribute, selectinload

from syncwarden.core.search_keys import search_key
from syncwarden.workflows.model import TicketStatus
from syncwarden.workflows.paging import (
    PAGE_SIZE,
    Page,
    TicketScope,
    TicketsCursor,
    TicketsFilter,
    UsersCursor,
    UsersFilter,
    UserState,
    prefix_range,
)
from syncwarden.workflows.ports import TicketView
from syncwarden.workflows.records import (
    ADDRESS_LENGTH,
    Enrollment,
    Ticket,
    canonical_object_id,
    ticket_id_from_ref,
    ticket_ref,
)
from syncwarden.workflows.results import EnrollmentView, OpenRequest, PersonStatus
from syncwarden.workflows.views import ticket_view

OPEN_STATUSES = tuple(status.value for status in TicketStatus if status.is_open)
# "The ticket is open", with the statuses written into the SQL rather than sent as parameters:
# it is the predicate of the partial index uq_tickets_open_subject, and a planner uses a
# partial index only when it can prove the query implies the predicate when planning, which it
# cannot from parameters (SQLite never; PostgreSQL not in a cached generic plan).
IS_OPEN = Ticket.status.in_(
    bindparam("open_statuses", OPEN_STATUSES, expanding=True, literal_execute=True)
)


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

    async def open_ticket_of(self, subject_id: str) -> TicketView | None:
        async with self._sessions() as session:
            ticket = await session.scalar(
                with_children(select(Ticket)).where(
                    Ticket.subject_id == canonical_object_id(subject_id),
                    IS_OPEN,
                )
            )
            return ticket_view(ticket) if ticket else None

    async def ticket_by_id(self, ticket_id: int) -> TicketView | None:
        async with self._sessions() as session:
            ticket = await load_ticket(session, ticket_id)
            return ticket_view(ticket) if ticket else None

    async def enrollment_by_id(self, enrollment_id: int) -> Enrollment | None:
        async with self._sessions() as session:
            return await session.get(Enrollment, enrollment_id)

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
        """Where one person stands, in one round trip: their active enrollment and their open
        ticket, each outer-joined to the person, so either, both or neither may be there.

        The open ticket comes without its decisions and steps (the answer names its number
        and status only), which is what keeps this one query.
        """
        subject = canonical_object_id(person_id)
        person = select(literal(subject, String()).label("subject_id")).subquery("person")
        open_ticket = and_(Ticket.subject_id == person.c.subject_id, IS_OPEN)
        enrolled = and_(Enrollment.subject_id == person.c.subject_id, Enrollment.active.is_(True))
        async with self._sessions() as session:
            rows = await session.execute(
                select(Ticket.id, Ticket.kind, Ticket.status, Enrollment)
                .select_from(person)
                .outerjoin(Ticket, open_ticket)
                .outerjoin(Enrollment, enrolled)
                .order_by(Enrollment.id)
            )
            first = rows.first()
        enrollment = first.Enrollment if first is not None else None
        ticket = (
            OpenRequest(ticket_ref(first.id), first.kind, first.status)
            if first is not None and first.id is not None
            else None
        )
        return PersonStatus(
            open_ticket=ticket,
            enrolled_mailbox=enrollment.mailbox if enrollment else None,
            last_sync_at=enrollment.last_success_at if enrollment else None,
            last_error=enrollment.last_error if enrollment else None,
            access_until=enrollment.access_until if enrollment else None,
            last_sync_summary=enrollment.last_sync_summary if enrollment else None,
        )

    async def enrollments_of(self, who: str) -> list[EnrollmentView]:
        """The active enrollments of one person, named by object id, UPN or sync address."""
        key = search_key(who, ADDRESS_LENGTH)
        async with self._sessions() as session:
            rows = await session.scalars(
                select(Enrollment).where(
                    Enrollment.active.is_(True),
                    or_(
                        Enrollment.subject_id == canonical_object_id(who),
                        Enrollment.upn_key == key,
                        Enrollment.mailbox_key == key,
                    ),
                )
            )
            return [enrollment_view(row) for row in rows.all()]

    async def users_page(
        self, wanted: UsersFilter, after: UsersCursor | None = None, *, size: int = PAGE_SIZE
    ) -> Page[EnrollmentView]:
        """One page of the enrolled people ``wanted`` describes, by name, after ``after``."""
        query = select(Enrollment).where(Enrollment.active.is_(True))
        if wanted.state is UserState.PAUSED:
            query = query.where(Enrollment.paused.is_(True))
        elif wanted.state is UserState.FAILING:
            query = query.where(Enrollment.last_error.is_not(None))
        elif wanted.state is UserState.OK:
            query = query.where(Enrollment.paused.is_(False), Enrollment.last_error.is_(None))
        if wanted.error_kind is not None:
            query = query.where(Enrollment.last_error_kind == wanted.error_kind)
        if wanted.name is not None:
            prefix = search_key(wanted.name, ADDRESS_LENGTH)
            query = query.where(
                or_(
                    _starts_with(Enrollment.name_key, prefix),
                    _starts_with(Enrollment.upn_key, prefix),
                    _starts_with(Enrollment.mailbox_key, prefix),
                )
            )
        if after is not None:
            query = query.where(
                tuple_(Enrollment.name_key, Enrollment.id) > tuple_(after.name_key, after.id)
            )
        async with self._sessions() as session:
            rows = (
                await session.scalars(
                    query.order_by(Enrollment.name_key, Enrollment.id).limit(size + 1)
                )
            ).all()
        shown = rows[:size]
        more = len(rows) > size
        cursor = UsersCursor(shown[-1].name_key, shown[-1].id) if more else None
        return Page(tuple(enrollment_view(row) for row in shown), cursor)

    async def tickets_page(
        self, wanted: TicketsFilter, after: TicketsCursor | None = None, *, size: int = PAGE_SIZE
    ) -> Page[TicketView]:
        """One page of the tickets ``wanted`` describes, newest first, after ``after``.

        Newest first is by row id: ids are handed out in the order tickets are created, and the
        primary key is already the index that reads them in that order.
        """
        query = with_children(select(Ticket))
        if wanted.scope is TicketScope.OPEN:
            query = query.where(IS_OPEN)
        elif wanted.scope is not TicketScope.ALL:
            query = query.where(Ticket.status == wanted.scope.value)
        if wanted.error_kind is not None:
            query = query.where(Ticket.failure_kind == wanted.error_kind)
        if wanted.name is not None:
            prefix = search_key(wanted.name, ADDRESS_LENGTH)
            query = query.where(
                or_(_starts_with(Ticket.name_key, prefix), _starts_with(Ticket.upn_key, prefix))
            )
        if after is not None:
            query = query.where(Ticket.id < after.id)
        async with self._sessions() as session:
            rows = (await session.scalars(query.order_by(Ticket.id.desc()).limit(size + 1))).all()
            shown = rows[:size]
            views = tuple(ticket_view(ticket) for ticket in shown)
        cursor = TicketsCursor(shown[-1].id) if len(rows) > size else None
        return Page(views, cursor)


def _starts_with(column: InstrumentedAttribute[str], prefix: str) -> ColumnElement[bool]:
    """``column`` starts with ``prefix``, as a range its btree index reads (see prefix_range)."""
    low, high = prefix_range(prefix)
    if high is None:
        return column >= low
    return and_(column >= low, column < high)


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
