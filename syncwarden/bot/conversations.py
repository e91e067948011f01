"""Where the bot can write to: stored conversation references.

Teams only lets a bot message a person or a channel proactively with a conversation reference
captured earlier (from any activity there, or the app's installation event). Every incoming
activity refreshes the reference of its conversation; a person's 1:1 chat is found by their Entra
object id, and the IT and approvals channels by the role an admin gave them (one channel may be
both).

A turn's reference is nearly always the one already stored, so it is read first and written only
when the turn would change it (or its last refresh is :data:`REFRESH_AFTER` old). A write is a
transaction that takes SQLite's one write lock (a row lock and a WAL flush on PostgreSQL); made
on every turn, it put every `help` in the same queue as every decision.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Boolean, Row, String, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql import Executable
from sqlalchemy.sql.base import ReadOnlyColumnCollection
from sqlalchemy.sql.elements import KeyedColumnElement

from syncwarden.core.db import (
    Base,
    UtcDateTime,
    insert_ignoring_duplicates,
    outside_transaction,
    utc_now,
    write_transaction,
)
from syncwarden.core.logging import get_logger

log = get_logger(__name__)


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
            blocked=self.blocked,
        )


class ChannelRoleRecord(Base):
    """Which conversation holds each channel role; one conversation may hold several."""

    __tablename__ = "channel_roles"

    role: Mapped[str] = mapped_column(String(16), primary_key=True)
    conversation_id: Mapped[str] = mapped_column(String(512))
    assigned_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)


def _refreshed(
    new: ReadOnlyColumnCollection[str, KeyedColumnElement[Any]], now: datetime
) -> dict[Any, Any]:
    """What a turn refreshes in a stored reference (``new`` is the row it tried to insert).

    The newest service URL and bot id win; the tenant and the person's ids stay when the turn
    does not name them; roles an admin gave the conversation are kept elsewhere.
    """
    table = ConversationRecord
    return {
        table.service_url: new.service_url,
        table.tenant_id: func.coalesce(new.tenant_id, table.tenant_id),
        table.bot_id: new.bot_id,
        table.installed: True,
        # They wrote to us, so they have not blocked us (any more).
        table.blocked: False,
        table.user_aad_id: func.coalesce(new.user_aad_id, table.user_aad_id),
        table.user_mri: func.coalesce(new.user_mri, table.user_mri),
        table.updated_at: now,
    }


# An unchanged reference is still written this long after its last write, so ``updated_at`` keeps
# saying which conversations are in use (``for_user`` and ``latest`` take the newest) to the hour.
REFRESH_AFTER = timedelta(hours=1)
# A reference this process stored, or found stored as it is, this recently is taken as still
# stored without reading the row: that read was the last database statement of a turn that
# changes nothing else (every message and click from a known chat). What another replica changes
# meanwhile (a chat marked blocked or uninstalled after a failed send) this process sets right
# on the first turn after the minute, as it would have on a turn just before that change. Its
# own changes it forgets at once; an installation always reads.
CONFIRMED_FOR = timedelta(minutes=1)
# References confirmed at most at once, the oldest forgotten first: a process serving many
# people reads a little more, never holds more than this.
CONFIRMED_LIMIT = 10_000
# Built once: SQLAlchemy caches a statement's SQL, but building the statement object itself costs
# more than running this lookup, on every turn.
_STORED = select(
    ConversationRecord.service_url,
    ConversationRecord.tenant_id,
    ConversationRecord.bot_id,
    ConversationRecord.user_aad_id,
    ConversationRecord.user_mri,
    ConversationRecord.installed,
    ConversationRecord.blocked,
    ConversationRecord.updated_at,
).where(ConversationRecord.conversation_id == bindparam("conversation_id"))
_StoredRow = Row[str, str | None, str, str | None, str | None, bool, bool, datetime]


def _would_refresh(stored: _StoredRow | None, values: dict[str, Any], now: datetime) -> bool:
    """Whether the upsert of ``values`` would change the stored row (see :func:`_refreshed`):
    a new conversation, another service URL or bot id, a tenant or person id the row lacks or
    holds otherwise, an uninstalled or blocked conversation, or a refresh an hour old."""
    if stored is None:
        return True
    named = ("tenant_id", "user_aad_id", "user_mri")  # kept when the turn does not name them
    return (
        stored.service_url != values["service_url"]
        or stored.bot_id != values["bot_id"]
        or any(values[name] is not None and getattr(stored, name) != values[name] for name in named)
        or not stored.installed
        or stored.blocked
        or now - stored.updated_at >= REFRESH_AFTER
    )


# The longest value each text column holds (PostgreSQL refuses a longer one; SQLite would not).
_LENGTHS = {
    column.name: column.type.length
    for column in ConversationRecord.__table__.columns
    if isinstance(column.type, String) and column.type.length
}
_IDS = ("conversation_id", "service_url", "tenant_id", "bot_id", "user_aad_id", "user_mri")


def _unstorable(ref: ConversationRef) -> str | None:
    """Why a reference cannot be stored as it is, or None: each id must fit its column, and be
    text both databases take (PostgreSQL refuses NUL; neither encodes a lone surrogate)."""
    for name in _IDS:
        value = getattr(ref, name)
        if value is None:
            continue
        if not isinstance(value, str):
            return f"{name} is not text"
        if len(value) > _LENGTHS[name]:
            return f"{name} is longer than {_LENGTHS[name]} characters"
        if not value.isprintable():
            return f"{name} has control characters or lone surrogates"
    return None


class ConversationStore:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        # conversation id -> (what was confirmed, when); insertion order is age (see CONFIRMED_FOR).
        self._confirmed: OrderedDict[str, tuple[ConversationRef, datetime]] = OrderedDict()

    def _recently_confirmed(self, ref: ConversationRef, now: datetime) -> bool:
        confirmed = self._confirmed.get(ref.conversation_id)
        return confirmed is not None and confirmed[0] == ref and now - confirmed[1] < CONFIRMED_FOR

    def _confirm(self, ref: ConversationRef, now: datetime) -> None:
        self._confirmed.pop(ref.conversation_id, None)
        self._confirmed[ref.conversation_id] = (ref, now)
        while len(self._confirmed) > CONFIRMED_LIMIT:
            self._confirmed.popitem(last=False)

    async def remember(self, ref: ConversationRef, *, installed: bool = False) -> None:
        """Insert or refresh a reference; the service URL can move, so the newest one wins.

        The stored row is read first, without a lock, and nothing is written when the turn
        would not change it (:func:`_would_refresh`). Otherwise one statement, an upsert
        (``INSERT … ON CONFLICT DO UPDATE``): two activities arriving together for a new chat
        both store its reference, and a read-then-insert would let both insert (a row lock
        cannot lock a row that is not there yet) and fail one turn. A change made between the
        read and the upsert (another replica marking the chat blocked) is no different from one
        made just after an upsert: the next turn that finds it sets it right.

        A reference confirmed in the last :data:`CONFIRMED_FOR` is not read again, unless
        ``installed`` (the app was just added there, maybe again after its removal).
        """
        problem = _unstorable(ref)
        if problem is not None:
            # Teams never sends such ids; a forged activity's are not kept (the turn goes on).
            log.warning("conversation.not_stored", reason=problem)
            return
        now = self._clock()
        if not installed and self._recently_confirmed(ref, now):
            return
        values = {
            "conversation_id": ref.conversation_id,
            "kind": ref.kind.value,
            "service_url": ref.service_url,
            "tenant_id": ref.tenant_id,
            "bot_id": ref.bot_id,
            "user_aad_id": ref.user_aad_id.lower() if ref.user_aad_id else None,
            "user_mri": ref.user_mri,
            "installed": True,
            "blocked": False,
            "updated_at": now,
        }
        async with self._sessions() as session:
            await outside_transaction(session)
            stored = (
                await session.execute(_STORED, {"conversation_id": ref.conversation_id})
            ).first()
        if not _would_refresh(stored, values, now):
            self._confirm(ref, now)
            return
        key = [ConversationRecord.conversation_id]
        async with write_transaction(self._sessions) as session:
            dialect = session.get_bind().dialect.name
            if dialect == "postgresql":
                on_pg = postgresql.insert(ConversationRecord).values(values)
                upsert: Executable = on_pg.on_conflict_do_update(
                    index_elements=key, set_=_refreshed(on_pg.excluded, now)
                )
            elif dialect == "sqlite":
                on_sqlite = sqlite.insert(ConversationRecord).values(values)
                upsert = on_sqlite.on_conflict_do_update(
                    index_elements=key, set_=_refreshed(on_sqlite.excluded, now)
                )
            else:
                raise NotImplementedError(f"no upsert for the {dialect} database")
            await session.execute(upsert)
        self._confirm(ref, now)

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

    async def latest(self) -> ConversationRef | None:
        """The most recently refreshed reference of any conversation the bot is still in.

        A chat the bot opens itself (its app installed for someone through Graph) comes with no
        activity, so no service URL or bot id: Teams serves a tenant from one regional service
        URL, and the bot's id is its own, so both are taken from the newest conversation known.
        """
        async with self._sessions() as session:
            record = await session.scalar(
                select(ConversationRecord)
                .where(ConversationRecord.installed.is_(True))
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
                select(ConversationRecord)
                .join(
                    ChannelRoleRecord,
                    ChannelRoleRecord.conversation_id == ConversationRecord.conversation_id,
                )
                .where(ChannelRoleRecord.role == role.value, ConversationRecord.installed.is_(True))
            )
            return record.as_ref() if record else None

    async def assign_role(self, conversation_id: str, role: ChannelRole) -> bool:
        """Make this conversation *the* channel for ``role`` (any previous one loses it; the
        conversation keeps any other role it has)."""
        now = utc_now()
        async with write_transaction(self._sessions) as session:
            record = await session.get(ConversationRecord, conversation_id)
            if record is None:
                return False
            # Insert-or-ignore, then update: two admins naming channels at once both succeed,
            # and the later statement decides.
            await insert_ignoring_duplicates(
                session,
                ChannelRoleRecord,
                [{"role": role.value, "conversation_id": conversation_id, "assigned_at": now}],
                unique="role",
            )
            await session.execute(
                update(ChannelRoleRecord)
                .where(ChannelRoleRecord.role == role.value)
                .values(conversation_id=conversation_id, assigned_at=now)
            )
            return True

    async def forget(self, conversation_id: str) -> None:
        """The app was uninstalled there: keep the row for history, stop writing to it."""
        self._confirmed.pop(conversation_id, None)
        async with write_transaction(self._sessions) as session:
            await session.execute(
                update(ConversationRecord)
                .where(ConversationRecord.conversation_id == conversation_id)
                .values(installed=False, updated_at=utc_now())
            )

    async def mark_blocked(self, conversation_id: str) -> None:
        """The person blocked the bot (403 ``MessageWritesBlocked``): stop until they write."""
        self._confirmed.pop(conversation_id, None)
        async with write_transaction(self._sessions) as session:
            await session.execute(
                update(ConversationRecord)
                .where(ConversationRecord.conversation_id == conversation_id)
                .values(blocked=True)
            )
