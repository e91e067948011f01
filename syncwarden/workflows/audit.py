"""The audit trail: an append-only record of every change Syncwarden makes or is asked to make.

Rows are only ever inserted. The ticket workflow (a later capability) writes one per decision and
step; operators export them with ``syncwarden audit export``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import IO, Any

from sqlalchemy import JSON, Integer, String, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from syncwarden.core.db import Base, UtcDateTime, utc_now

# session.info key: where a unit of work collects the audit rows recorded on its session.
PENDING_AUDIT_ROWS = "syncwarden.pending_audit_rows"


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
) -> AuditEvent | None:
    """Add an audit row to the caller's unit of work; it is written when that work commits.

    Inside a :class:`workflows.unit_of_work.UnitOfWork` the row joins the work's other audit
    rows (one ``INSERT`` at the commit, in the order they were recorded); elsewhere it is an
    ORM object added to ``session``, returned.
    """
    pending: list[dict[str, Any]] | None = session.info.get(PENDING_AUDIT_ROWS)
    if pending is not None:
        pending.append(
            audit_values(
                actor=actor, action=action, ticket_ref=ticket_ref, before=before, after=after
            )
        )
        return None
    event = AuditEvent(
        actor=actor, action=action, ticket_ref=ticket_ref, before=before, after=after
    )
    session.add(event)
    return event


def audit_values(
    *,
    actor: str,
    action: str,
    ticket_ref: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    occurred_at: datetime | None = None,
) -> dict[str, Any]:
    """An audit row as plain values, for an ``INSERT`` of many rows at once (every row holds the
    same keys; ``occurred_at`` defaults to now, as the mapped column does)."""
    return {
        "occurred_at": occurred_at or utc_now(),
        "actor": actor,
        "action": action,
        "ticket_ref": ticket_ref,
        "before": before,
        "after": after,
    }


AUDIT_COLUMNS = ("id", "occurred_at", "actor", "action", "ticket_ref", "before", "after")


def audit_row(event: AuditEvent) -> dict[str, Any]:
    """One audit event as plain data, the same for every export format."""
    return {
        "id": event.id,
        "occurred_at": event.occurred_at.isoformat(),
        "actor": event.actor,
        "action": event.action,
        "ticket_ref": event.ticket_ref,
        "before": event.before,
        "after": event.after,
    }


async def iter_audit(
    sessions: async_sessionmaker[AsyncSession], *, since: datetime | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Audit events in the order they happened, streamed so a large export stays small in memory."""
    query = select(AuditEvent).order_by(AuditEvent.id).execution_options(yield_per=500)
    if since is not None:
        query = query.where(AuditEvent.occurred_at >= since)
    async with sessions() as session:
        async for event in await session.stream_scalars(query):
            yield audit_row(event)


def _csv_row(row: dict[str, Any]) -> dict[str, Any]:
    """CSV has no nesting: before/after become JSON text, a missing ticket an empty cell."""
    return {
        **row,
        "ticket_ref": row["ticket_ref"] or "",
        "before": json.dumps(row["before"], sort_keys=True) if row["before"] is not None else "",
        "after": json.dumps(row["after"], sort_keys=True) if row["after"] is not None else "",
    }


async def export_audit(
    sessions: async_sessionmaker[AsyncSession], out: IO[str], *, fmt: str, since: datetime | None
) -> int:
    """Write the audit trail as CSV (with a header) or JSON lines; returns how many events."""
    writer = csv.DictWriter(out, fieldnames=AUDIT_COLUMNS) if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    count = 0
    async for row in iter_audit(sessions, since=since):
        if writer is not None:
            writer.writerow(_csv_row(row))
        else:
            out.write(json.dumps(row, sort_keys=True) + "\n")
        count += 1
    return count
