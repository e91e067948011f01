"""Enrollments written straight to the database, as a completed ticket would leave them."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from syncwarden.core.db import write_transaction
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.workflows.records import Enrollment


async def enroll(
    sessions: async_sessionmaker[AsyncSession],
    tenant: SandboxTenant,
    upn: str,
    *profiles: str,
) -> list[int]:
    """One active enrollment of the sandbox person ``upn`` per profile (``P-1`` when none)."""
    async with write_transaction(sessions) as session:
        rows = [
            Enrollment(
                subject_id=tenant.seed.user_ids[upn],
                subject_upn=upn,
                subject_name=upn.split("@")[0].replace(".", " ").title(),
                profile_id=profile,
                mailbox=upn,
                active=True,
                paused=False,
            )
            for profile in profiles or ("P-1",)
        ]
        session.add_all(rows)
        await session.flush()
        return [row.id for row in rows]
