"""The built-in scheduling adapter: profiles and mappings kept in Syncwarden's own database.

Used when the scheduling system has no API for its "users to sync" list, or for trying
Syncwarden out: profiles are imported from a CSV file (``syncwarden import profiles``) and the
mapping step writes here. With ``writes_mappings=False`` (the *manual* adapter) the same profiles
are used for matching, but mappings are left to a person at the vendor's console.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, String, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from syncwarden.connectors.errors import NotFoundError
from syncwarden.connectors.scheduling.ports import Mapping, Profile
from syncwarden.core.db import Base, UtcDateTime, utc_now, write_transaction

MAX_PROFILE_MATCHES = 10


class ProfileRecord(Base):
    __tablename__ = "scheduling_profiles"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now, onupdate=utc_now)


class MappingRecord(Base):
    __tablename__ = "scheduling_mappings"

    profile_id: Mapped[str] = mapped_column(
        ForeignKey("scheduling_profiles.id", ondelete="CASCADE"), primary_key=True
    )
    mailbox: Mapped[str] = mapped_column(String(320))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now, onupdate=utc_now)


class BuiltinScheduling:
    """A :class:`connectors.scheduling.ports.SchedulingSystem` on our own tables."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], *, writes_mappings: bool = True
    ) -> None:
        self._sessions = sessions
        self.writes_mappings = writes_mappings
        self.name = "builtin" if writes_mappings else "manual"

    async def find_profiles(
        self, *, email: str | None = None, name: str | None = None
    ) -> Sequence[Profile]:
        async with self._sessions() as session:
            if email:
                query = select(ProfileRecord).where(
                    func.lower(ProfileRecord.email) == email.strip().lower()
                )
                rows = (await session.scalars(query.limit(MAX_PROFILE_MATCHES))).all()
                if rows or not name:
                    return [_profile(row) for row in rows]
            if not name or not name.strip():
                return []
            pattern = f"%{_escape_like(name.strip().lower())}%"
            query = (
                select(ProfileRecord)
                .where(func.lower(ProfileRecord.name).like(pattern, escape="\\"))
                .order_by(ProfileRecord.name)
                .limit(MAX_PROFILE_MATCHES)
            )
            return [_profile(row) for row in (await session.scalars(query)).all()]

    async def upsert_mapping(self, profile_id: str, mailbox: str) -> Mapping:
        async with write_transaction(self._sessions) as session:
            if await session.get(ProfileRecord, profile_id) is None:
                raise NotFoundError(f"no scheduling profile with id {profile_id}")
            record = await session.get(MappingRecord, profile_id, with_for_update=True)
            if record is None:
                record = MappingRecord(profile_id=profile_id, mailbox=mailbox, active=True)
                session.add(record)
            else:
                record.mailbox = mailbox
                record.active = True
            return Mapping(profile_id, mailbox, True)

    async def deactivate_mapping(self, profile_id: str) -> Mapping | None:
        async with write_transaction(self._sessions) as session:
            record = await session.get(MappingRecord, profile_id, with_for_update=True)
            if record is None:
                return None
            record.active = False
            return Mapping(profile_id, record.mailbox, False)

    async def list_mappings(self) -> Sequence[Mapping]:
        async with self._sessions() as session:
            rows = (
                await session.scalars(select(MappingRecord).order_by(MappingRecord.profile_id))
            ).all()
            return [Mapping(row.profile_id, row.mailbox, row.active) for row in rows]

    async def upsert_profile(self, profile: Profile) -> bool:
        """Create or update one profile (the CSV import); True when it was new."""
        async with write_transaction(self._sessions) as session:
            record = await session.get(ProfileRecord, profile.id)
            if record is None:
                session.add(ProfileRecord(id=profile.id, name=profile.name, email=profile.email))
                return True
            record.name = profile.name
            record.email = profile.email
            return False


def _profile(row: ProfileRecord) -> Profile:
    return Profile(id=row.id, name=row.name, email=row.email)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
