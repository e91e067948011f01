"""Enrollments written straight to the database, as a completed ticket would leave them."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from syncwarden.core.db import write_transaction
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.workflows.records import Enrollment, Ticket


async def enroll(
    sessions: async_sessionmaker[AsyncSession],
    tenant: SandboxTenant,
    upn: str,
    *profiles: str,
    at_primary: bool = False,
) -> list[int]:
    """One active enrollment of the sandbox person ``upn`` per profile (``P-1`` when none), at
    the address ``upn`` or, with ``at_primary``, at their primary address as the directory has
    it (what a ticket chooses, so reconciliation sees no mover)."""
    user = tenant.state.user(upn)
    mailbox = (user.mail if at_primary and user is not None else None) or upn
    async with write_transaction(sessions) as session:
        rows = [
            Enrollment(
                subject_id=tenant.seed.user_ids[upn],
                subject_upn=upn,
                subject_name=upn.split("@")[0].replace(".", " ").title(),
                profile_id=profile,
                mailbox=mailbox,
                active=True,
                paused=False,
            )
            for profile in profiles or ("P-1",)
        ]
        session.add_all(rows)
        await session.flush()
        return [row.id for row in rows]


async def ticket_under_way(
    sessions: async_sessionmaker[AsyncSession],
    tenant: SandboxTenant,
    upn: str,
    *,
    kind: str = "enroll",
    status: str = "provisioning",
) -> int:
    """A ticket for the sandbox person ``upn``, as one that is still being carried out looks."""
    name = upn.split("@")[0].replace(".", " ").title()
    async with write_transaction(sessions) as session:
        ticket = Ticket(
            kind=kind,
            status=status,
            subject_id=tenant.seed.user_ids[upn],
            subject_upn=upn,
            subject_name=name,
            subject_mail=upn,
            requester_id=tenant.seed.user_ids[upn],
            requester_upn=upn,
            requester_name=name,
            mailbox=upn,
        )
        session.add(ticket)
        await session.flush()
        return ticket.id


async def close_ticket(
    sessions: async_sessionmaker[AsyncSession], ticket_id: int, status: str
) -> None:
    async with write_transaction(sessions) as session:
        ticket = await session.get(Ticket, ticket_id)
        assert ticket is not None
        ticket.status = status
