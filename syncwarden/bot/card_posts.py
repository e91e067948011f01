"""The approval cards posted about each ticket, and the newest state of the ticket they show.

Every copy of a ticket's approval card (to each approver and the approvals channel) is updated in
place when the ticket moves on, so each post is remembered here. Deliveries of one ticket's
notifications can arrive out of order: a kill between a card's post and its outbox record sends
the approval request again minutes later, after the decision's update went out. So the newest
view of each ticket any card was rendered from is kept too (``card_views``), and a delivery
renders whichever is newer, its own snapshot or that one: a card never goes back to an older
state of its ticket.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from syncwarden.core.db import (
    Base,
    UtcDateTime,
    insert_ignoring_duplicates,
    utc_now,
    write_transaction,
)
from syncwarden.workflows.ports import TicketView
from syncwarden.workflows.view_json import ticket_from_json, ticket_to_json


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


class CardView(Base):
    """The newest state of a ticket that any of its cards was rendered from."""

    __tablename__ = "card_views"

    ticket_ref: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    view: Mapped[dict[str, Any]] = mapped_column(JSON)


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

    async def newest_view(self, ticket: TicketView) -> TicketView:
        """The newer of ``ticket`` and the newest view stored for it, storing ``ticket`` if it
        is the newer one.

        The store is committed before any card is rendered from the result, so of two
        deliveries rendering different versions at once, the one with the older version finds
        the newer one when it checks again after its own post (see ``TeamsDelivery``).
        """
        data = ticket_to_json(ticket)
        async with write_transaction(self._sessions) as session:
            await insert_ignoring_duplicates(
                session,
                CardView,
                [{"ticket_ref": ticket.ref, "version": ticket.version, "view": data}],
                unique="ticket_ref",
            )
            await session.execute(
                update(CardView)
                .where(CardView.ticket_ref == ticket.ref, CardView.version < ticket.version)
                .values(version=ticket.version, view=data)
            )
            stored = await session.scalar(
                select(CardView.view).where(CardView.ticket_ref == ticket.ref)
            )
        newest = ticket_from_json(stored) if stored else ticket
        return newest if newest.version > ticket.version else ticket
