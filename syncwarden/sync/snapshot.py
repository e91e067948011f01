"""What a run needs to know of a person before it starts, read for one person or for a batch.

A run reads the person's enrollment and sync state (one statement), and the source's change
marker. A quiet person's run does little else, so each of those statements was a large share
of its CPU; the worker therefore reads them for its whole claimed batch at once
(:class:`Prepared`) and each run takes its share. A snapshot read for the batch serves only a
run that starts soon after (``PREPARED_SECONDS``): the state rows are under the worker's lease,
but the enrollment (paused, deactivated, remapped) is not, and a run should not act on an
enrollment much older than the one it would have read itself. Markers have no such limit: one
read earlier than needed only vouches for less.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from syncwarden.connectors.scheduling.ports import Window
from syncwarden.core.db import outside_transaction
from syncwarden.sync.plan import LinkView
from syncwarden.sync.records import SyncState
from syncwarden.workflows.records import Enrollment

# How long a snapshot read for a batch may serve a run that starts after it was read.
PREPARED_SECONDS = 2.0


@dataclass(frozen=True)
class Snapshot:
    """The person's enrollment and sync state; their links only once a run needs a plan."""

    enrollment_id: int
    person: str
    mailbox: str
    profile_id: str
    active: bool
    paused: bool
    last_error: str | None
    delta_link: str | None
    delta_started_at: datetime | None
    delta_window: Window | None
    source_count: int
    consecutive_failures: int
    busy_blocks: int
    fingerprint: str | None
    marker: str | None
    # The last run's created/updated/deleted/requests, as the state row holds them.
    counts: Mapping[str, int] = field(default_factory=dict)
    links: Sequence[LinkView] = ()


@dataclass
class Prepared:
    """Snapshots and source markers read for a claimed batch before any of its runs."""

    snapshots: dict[int, Snapshot]
    markers: dict[str, str]
    read_at: float = field(default_factory=time.monotonic)

    def take(self, enrollment_id: int) -> Snapshot | None:
        """The person's snapshot, once, while it is recent enough; else None (read your own)."""
        snapshot = self.snapshots.pop(enrollment_id, None)
        if time.monotonic() - self.read_at > PREPARED_SECONDS:
            return None
        return snapshot


_ENROLLMENT = cast(Table, Enrollment.__table__)
_STATE = cast(Table, SyncState.__table__)
# One Core statement built once, run outside a transaction: every quiet person's run needs it.
_SNAPSHOTS = (
    select(
        _ENROLLMENT.c.id,
        _ENROLLMENT.c.subject_upn,
        _ENROLLMENT.c.subject_id,
        _ENROLLMENT.c.profile_id,
        _ENROLLMENT.c.active,
        _ENROLLMENT.c.paused,
        _ENROLLMENT.c.last_error,
        _STATE.c.delta_link,
        _STATE.c.delta_started_at,
        _STATE.c.delta_window_start,
        _STATE.c.delta_window_end,
        _STATE.c.source_count,
        _STATE.c.consecutive_failures,
        _STATE.c.busy_blocks,
        _STATE.c.source_fingerprint,
        _STATE.c.source_marker,
        _STATE.c.created,
        _STATE.c.updated,
        _STATE.c.deleted,
        _STATE.c.requests,
    )
    .select_from(_ENROLLMENT.outerjoin(_STATE, _STATE.c.enrollment_id == _ENROLLMENT.c.id))
    .where(_ENROLLMENT.c.id.in_(bindparam("enrollment_ids", expanding=True)))
)


async def load_snapshots(
    sessions: async_sessionmaker[AsyncSession], enrollment_ids: Collection[int]
) -> dict[int, Snapshot]:
    """The snapshots of these enrollments (missing ones left out), as plain values."""
    if not enrollment_ids:
        return {}
    async with sessions() as session:
        await outside_transaction(session)
        rows = (await session.execute(_SNAPSHOTS, {"enrollment_ids": list(enrollment_ids)})).all()
    snapshots = {}
    for row in rows:
        window_start, window_end = row.delta_window_start, row.delta_window_end
        snapshots[row.id] = Snapshot(
            enrollment_id=row.id,
            person=row.subject_upn,
            mailbox=row.subject_id,
            profile_id=row.profile_id,
            active=row.active,
            paused=row.paused,
            last_error=row.last_error,
            delta_link=row.delta_link,
            delta_started_at=row.delta_started_at,
            delta_window=(
                Window(window_start, window_end)
                if window_start is not None and window_end is not None
                else None
            ),
            source_count=row.source_count or 0,
            consecutive_failures=row.consecutive_failures or 0,
            busy_blocks=row.busy_blocks or 0,
            fingerprint=row.source_fingerprint,
            marker=row.source_marker,
            counts={
                "created": row.created,
                "updated": row.updated,
                "deleted": row.deleted,
                "requests": row.requests,
            },
        )
    return snapshots
