"""Where the bot can write to: stored conversation references.

Teams only lets a bot message a person or a channel proactively with a conversation reference
captured earlier (from any activity there, or the app's installation event). Every incoming
activity refreshes the reference of its conversation; a person's 1:1 chat is found by their Entra
object id, and the IT and approvals channels by the role an admin gave them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, String, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UtcDateTime, utc_now, write_transaction


class ChannelRole(StrEnum):
    IT = "it"
    APPROVALS = "approvals"


class ConversationKind(StrEnum):
    PERSONAL = "personal"
    CHANNEL = "channel"
    GROUP_CHAT = "groupChat"


@dataclass(frozen=True)
class ConversationRef:
    conversation_id: str
    kind: ConversationKind
    service_url: str
    tenant_id: str | None
    bot_id: str
    user_aad_id: str | None = None
    # The person's Teams id (``29:…``) in a 1:1 chat; cards list these in ``refresh.userIds``.
    user_mri: str | None = None
    role: ChannelRole | None = None
    blocked: bool = False


class ConversationRecord(Base):
    __tablename__ = "conversation_refs"

    conversation_id: Mapped[str] = mapped_column(String(512), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    service_url: Mapped[str] = mapped_column(String(512))
    tenant_id: Mapped[str | None] = mapped_column(String(64))
    bot_id: Mapped[str] = mapped_column(String(256))
    user_aad_id: Mapped[str | None] = mapped_column(String(64), index=True)
    user_mri: Mapped[str | None] = mapped_column(String(256))
    role: Mapped[str | None] = mapped_column(String(16), index=True)
    installed: Mapped[bool] = mapped_column(Boolean, default=True)
    blocked: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now, onupdate=utc_now)

    def as_ref(self) -> ConversationRef:
        return ConversationRef(
            conversation_id=self.conversation_id,
            kind=ConversationKind(self.kind),
            service_url=self.service_url,
            tenant_id=self.tenant_id,
            bot_id=self.bot_id,
            user_aad_id=self.user_aad_id,
            user_mri=self.user_mri,
            role=ChannelRole(self.role) if self.role else None,
            blocked=self.blocked,
        )


class ConversationStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def remember(self, ref: ConversationRef) -> None:
        """Insert or refresh a reference; the service URL can move, so the newest one wins."""
        async with write_transaction(self._sessions) as session:
            record = await session.get(
                ConversationRecord, ref.conversation_id, with_for_update=True
            )
            if record is None:
                session.add(
                    ConversationRecord(
                        conversation_id=ref.conversation_id,
                        kind=ref.kind.value,
                        service_url=ref.service_url,
                        tenant_id=ref.tenant_id,
                        bot_id=ref.bot_id,
                        user_aad_id=ref.user_aad_id.lower() if ref.user_aad_id else None,
                        user_mri=ref.user_mri,
                        installed=True,
                        blocked=False,
                    )
                )
                return
            record.service_url = ref.service_url
            record.tenant_id = ref.tenant_id or record.tenant_id
            record.bot_id = ref.bot_id
            record.installed = True
            record.blocked = False  # they wrote to us, so they have not blocked us (any more)
            if ref.user_aad_id:
                record.user_aad_id = ref.user_aad_id.lower()
            if ref.user_mri:
                record.user_mri = ref.user_mri

    async def for_user(self, aad_object_id: str) -> ConversationRef | None:
        async with self._sessions() as session:
            record = await session.scalar(
                select(ConversationRecord)
                .where(
                    ConversationRecord.user_aad_id == aad_object_id.lower(),
                    ConversationRecord.kind == ConversationKind.PERSONAL.value,
                    ConversationRecord.installed.is_(True),
                )
                .order_by(ConversationRecord.updated_at.desc())
                .limit(1)
            )
            return record.as_ref() if record else None

    async def mris_of(self, aad_object_ids: list[str]) -> list[str]:
        """Teams ids of those among these people who have a 1:1 chat with the bot."""
        wanted = [object_id.lower() for object_id in aad_object_ids]
        if not wanted:
            return []
        async with self._sessions() as session:
            rows = await session.scalars(
                select(ConversationRecord.user_mri).where(
                    ConversationRecord.user_aad_id.in_(wanted),
                    ConversationRecord.user_mri.is_not(None),
                    ConversationRecord.installed.is_(True),
                )
            )
            return sorted({mri for mri in rows.all() if mri})

    async def for_role(self, role: ChannelRole) -> ConversationRef | None:
        async with self._sessions() as session:
            record = await session.scalar(
                select(ConversationRecord).where(
                    ConversationRecord.role == role.value, ConversationRecord.installed.is_(True)
                )
            )
            return record.as_ref() if record else None

    async def assign_role(self, conversation_id: str, role: ChannelRole) -> bool:
        """Make this conversation *the* channel for ``role`` (any previous one loses it)."""
        async with write_transaction(self._sessions) as session:
            record = await session.get(ConversationRecord, conversation_id, with_for_update=True)
            if record is None:
                return False
            await session.execute(
                update(ConversationRecord)
                .where(ConversationRecord.role == role.value)
                .values(role=None)
            )
            record.role = role.value
            return True

    async def forget(self, conversation_id: str) -> None:
        """The app was uninstalled there: keep the row for history, stop writing to it."""
        async with write_transaction(self._sessions) as session:
            await session.execute(
                update(ConversationRecord)
                .where(ConversationRecord.conversation_id == conversation_id)
                .values(installed=False, updated_at=utc_now())
            )

    async def mark_blocked(self, conversation_id: str) -> None:
        """The person blocked the bot (403 ``MessageWritesBlocked``): stop until they write."""
        async with write_transaction(self._sessions) as session:
            await session.execute(
                update(ConversationRecord)
                .where(ConversationRecord.conversation_id == conversation_id)
                .values(blocked=True)
            )


class CardPost(Base):
    """A card we posted about a ticket, so every copy can be updated in place later."""

    __tablename__ = "card_posts"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    ticket_ref: Mapped[str] = mapped_column(String(32), index=True)
    conversation_id: Mapped[str] = mapped_column(String(512))
    activity_id: Mapped[str] = mapped_column(String(256))
    service_url: Mapped[str] = mapped_column(String(512))
    audience: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)


@dataclass(frozen=True)
class PostedCard:
    ticket_ref: str
    conversation_id: str
    activity_id: str
    service_url: str
    audience: str


class CardPostStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def add(self, post: PostedCard) -> None:
        async with write_transaction(self._sessions) as session:
            session.add(
                CardPost(
                    ticket_ref=post.ticket_ref,
                    conversation_id=post.conversation_id,
                    activity_id=post.activity_id,
                    service_url=post.service_url,
                    audience=post.audience,
                )
            )

    async def for_ticket(self, ticket_ref: str) -> list[PostedCard]:
        async with self._sessions() as session:
            rows = await session.scalars(
                select(CardPost).where(CardPost.ticket_ref == ticket_ref).order_by(CardPost.id)
            )
            return [
                PostedCard(
                    r.ticket_ref, r.conversation_id, r.activity_id, r.service_url, r.audience
                )
                for r in rows.all()
            ]
