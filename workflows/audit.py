"""The audit trail: an append-only record of every change Syncwarden makes or is asked to make.

Rows are only ever inserted. The ticket workflow (a later capability) writes one per decision and
step; operators export them with ``syncwarden audit export``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UtcDateTime, utc_now


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now, index=True)
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(64))
    ticket_ref: Mapped[str | None] = mapped_column(String(32), index=True)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)


def record_audit(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    ticket_ref: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an audit row to the caller's unit of work; it is written when that work commits."""
    event = AuditEvent(
        actor=actor, action=action, ticket_ref=ticket_ref, before=before, after=after
    )
    session.add(event)
    return event
