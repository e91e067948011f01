"""Graph change notifications: one subscription per enrolled mailbox, and what their posts mean.

A notification only says "something changed in this mailbox"; it becomes a sync request
(``requested_at``) for the mailbox's enrollments, which the worker serves within seconds with a
delta round. The database is the queue, so a notification is never held only in memory, and the
periodic run remains the safety net for anything missed.

Each subscription gets its own random ``clientState``. Only its SHA-256 is stored; a post whose
state does not hash to the stored value, or that names a subscription we do not know, is ignored.
Graph caps an event subscription's lifetime and refuses a longer ``expirationDateTime`` (it
used to cap at 4,230 minutes, now at 10,080 "under seven days"); we ask for less than the older,
shorter limit, keep the expiry Graph grants, and renew well before it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from syncwarden.connectors.errors import ConnectorError, NotFoundError
from syncwarden.connectors.graph.subscriptions import GraphSubscriptions
from syncwarden.core.db import Base, UtcDateTime, utc_now, write_transaction
from syncwarden.core.logging import get_logger
from syncwarden.workflows.records import Enrollment

log = get_logger(__name__)
# Under every published limit for Outlook events (4,230 minutes until 2024, 10,080 since), with
# half an hour to spare for the request's transit and clock skew: Graph refuses, never shortens.
LIFETIME = timedelta(minutes=4200)
RENEW_BEFORE = timedelta(hours=12)


class SubscriptionRecord(Base):
    __tablename__ = "sync_subscriptions"

    mailbox_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    subscription_id: Mapped[str] = mapped_column(String(128), unique=True)
    client_state_hash: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)


@dataclass
class Maintained:
    created: int = 0
    renewed: int = 0
    removed: int = 0
    failed: int = 0
    orphans_removed: int = 0

    def __str__(self) -> str:
        return (
            f"{self.created} subscriptions created, {self.renewed} renewed, "
            f"{self.removed} removed, {self.orphans_removed} orphans removed, "
            f"{self.failed} failed"
        )


@dataclass
class Received:
    requested_mailboxes: set[str] = field(default_factory=set)
    renewals: int = 0
    ignored: int = 0


_SUBSCRIPTION_ID = re.compile(r"[A-Za-z0-9-]{1,64}")


def _hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


class MailboxSubscriptions:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        graph: GraphSubscriptions,
        notification_url: str | None,
        request_mailbox: Callable[[str], Awaitable[int]],
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._sessions = sessions
        self._graph = graph
        self._url = notification_url
        self._request_mailbox = request_mailbox
        self._clock = clock
        # Set by the composition root: run the requested syncs now rather than at the next poll.
        self.on_requested: Callable[[], None] | None = None

    @property
    def enabled(self) -> bool:
        return self._url is not None

    async def maintain(self) -> Maintained:
        """Create missing subscriptions, renew those ending soon, remove those nobody needs."""
        done = Maintained()
        if self._url is None:
            return done
        now = self._clock()
        async with self._sessions() as session:
            wanted = set(
                (
                    await session.scalars(
                        select(Enrollment.subject_id)
                        .where(Enrollment.active.is_(True), Enrollment.paused.is_(False))
                        .distinct()
                    )
                ).all()
            )
            records = {r.mailbox_id: r for r in (await session.scalars(select(SubscriptionRecord)))}
        await self._remove_orphans({r.subscription_id for r in records.values()}, done)
        for mailbox_id, record in records.items():
            if mailbox_id not in wanted:
                await self._remove(record, done)
            elif record.expires_at - now < RENEW_BEFORE:
                await self._renew(record, done, now)
        for mailbox_id in sorted(wanted - set(records)):
            await self._create(mailbox_id, done, now)
        return done

    async def _remove_orphans(self, known: set[str], done: Maintained) -> None:
        """Delete what Graph holds for our notification URL that we have no record of.

        A create whose answer was lost (a timeout, a crash before the commit) leaves a
        subscription at Graph whose client state we never kept, so it can only be removed;
        the mailbox gets a fresh one below.
        """
        try:
            held = await self._graph.list_all()
        except ConnectorError as error:
            log.warning("graph_subscriptions.list_failed", error=str(error))
            return
        for subscription in held:
            if subscription.notification_url != self._url or subscription.id in known:
                continue
            try:
                await self._graph.delete(subscription.id)
                done.orphans_removed += 1
            except ConnectorError as error:
                done.failed += 1
                log.warning("graph_subscriptions.orphan_left", error=str(error))

    async def receive(self, payload: Mapping[str, Any]) -> Received:
        """One POST from Graph: change notifications and lifecycle events, checked and queued."""
        result = Received()
        items = payload.get("value")
        if not isinstance(items, list):
            return result
        # Graph's subscription ids are GUIDs; anything else (too long, not text, unencodable) is
        # not ours and must not reach the database, which may refuse it with an exception.
        named = {
            subscription_id
            for item in items
            if isinstance(item, dict)
            and (subscription_id := _subscription_id(item.get("subscriptionId"))) is not None
        }
        async with self._sessions() as session:
            rows = await session.scalars(
                select(SubscriptionRecord).where(SubscriptionRecord.subscription_id.in_(named))
            )
            known = {r.subscription_id: r for r in rows}
        for item in items:
            record = (
                known.get(_subscription_id(item.get("subscriptionId")) or "")
                if isinstance(item, dict)
                else None
            )
            state = item.get("clientState") if isinstance(item, dict) else None
            if (
                record is None
                or not isinstance(state, str)
                or not state.isprintable()
                or not hmac.compare_digest(_hash(state), record.client_state_hash)
            ):
                result.ignored += 1
                continue
            event = item.get("lifecycleEvent")
            if event == "reauthorizationRequired":
                await self._renew(record, Maintained(), self._clock())
                result.renewals += 1
            elif event == "subscriptionRemoved":
                await self._forget(record.mailbox_id)
            if event in (None, "missed", "subscriptionRemoved"):
                result.requested_mailboxes.add(record.mailbox_id)
        for mailbox_id in result.requested_mailboxes:
            await self._request_mailbox(mailbox_id)
        if result.requested_mailboxes and self.on_requested is not None:
            self.on_requested()
        if result.ignored:
            log.warning("graph_notifications.ignored", count=result.ignored)
        return result

    async def _create(self, mailbox_id: str, done: Maintained, now: datetime) -> None:
        assert self._url is not None
        state = secrets.token_urlsafe(32)
        try:
            created = await self._graph.create(
                resource=f"users/{mailbox_id}/events",
                notification_url=self._url,
                lifecycle_url=self._url,
                client_state=state,
                expires_at=now + LIFETIME,
            )
        except ConnectorError as error:
            done.failed += 1
            log.warning("subscription.create_failed", mailbox=mailbox_id, error=str(error))
            return
        async with write_transaction(self._sessions) as session:
            session.add(
                SubscriptionRecord(
                    mailbox_id=mailbox_id,
                    subscription_id=created.id,
                    client_state_hash=_hash(state),
                    expires_at=created.expires_at or now + LIFETIME,
                )
            )
        done.created += 1

    async def _renew(self, record: SubscriptionRecord, done: Maintained, now: datetime) -> None:
        try:
            renewed = await self._graph.renew(record.subscription_id, now + LIFETIME)
        except NotFoundError:
            await self._forget(record.mailbox_id)  # gone at Graph: the next pass creates anew
            return
        except ConnectorError as error:
            done.failed += 1
            log.warning("subscription.renew_failed", mailbox=record.mailbox_id, error=str(error))
            return
        async with write_transaction(self._sessions) as session:
            stored = await session.get(SubscriptionRecord, record.mailbox_id)
            if stored is not None:
                stored.expires_at = renewed.expires_at or now + LIFETIME
        done.renewed += 1

    async def _remove(self, record: SubscriptionRecord, done: Maintained) -> None:
        try:
            await self._graph.delete(record.subscription_id)
        except ConnectorError as error:
            done.failed += 1
            log.warning("subscription.delete_failed", mailbox=record.mailbox_id, error=str(error))
            return
        await self._forget(record.mailbox_id)
        done.removed += 1

    async def _forget(self, mailbox_id: str) -> None:
        async with write_transaction(self._sessions) as session:
            await session.execute(
                delete(SubscriptionRecord).where(SubscriptionRecord.mailbox_id == mailbox_id)
            )


def _subscription_id(value: Any) -> str | None:
    """A subscription id as Graph issues them (a GUID's characters), or None."""
    if not isinstance(value, str) or not _SUBSCRIPTION_ID.fullmatch(value):
        return None
    return value
