"""Quiet runs written together: one transaction for a group of people with nothing to do.

A quiet run (see :mod:`sync.engine`) writes only the round's new delta link, the source's
change marker, the release of its lease and the stamps ``status`` shows. Written one person at
a time, that transaction (a pool checkout and its ping, BEGIN, two UPDATEs, COMMIT) cost more
CPU than the engine's own work for the person; the worker instead collects the runs of a
claimed batch here and writes them with one executemany per table, every few runs and when
the batch is done.

Nothing is lost if the process dies before a write: the stored delta link is still good (the
round that followed it saw no change, so it reports what the newer one would), the stamps are
only stamps, and the leases run out by themselves. A person whose lease another worker took in
the meantime gets nothing from this write (link and stamps are limited to people whose lease is
still ours); unlike a planned run's commit, the run's report cannot say so, since it was handed
on before the write, and it says ``ok``: the person was in sync when the run looked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from syncwarden.core.db import write_transaction
from syncwarden.sync.records import SyncState
from syncwarden.workflows.records import Enrollment

_STATES = cast(Table, SyncState.__table__)
_ENROLLMENTS = cast(Table, Enrollment.__table__)
# Core statements (not ORM bulk updates): executemany of one cached statement per table.
_RELEASE = (
    update(_STATES)
    .where(
        _STATES.c.enrollment_id == bindparam("p_enrollment"),
        _STATES.c.lease_owner == bindparam("p_owner"),
    )
    .values(
        delta_link=bindparam("p_link"),
        source_marker=bindparam("p_marker"),
        requests=bindparam("p_requests"),
        created=0,
        updated=0,
        deleted=0,
        lease_owner=None,
        lease_expires_at=None,
    )
)
_STAMP = (
    update(_ENROLLMENTS)
    .where(
        _ENROLLMENTS.c.id == bindparam("p_enrollment"),
        select(_STATES.c.enrollment_id)
        .where(
            _STATES.c.enrollment_id == _ENROLLMENTS.c.id,
            _STATES.c.lease_owner == bindparam("p_owner"),
        )
        .exists(),
    )
    .values(
        last_run_at=bindparam("p_at"),
        last_success_at=bindparam("p_at"),
        last_sync_summary=bindparam("p_summary"),
    )
)


@dataclass(frozen=True)
class QuietRun:
    enrollment_id: int
    delta_link: str
    requests: int
    summary: str
    at: datetime
    # The source's change marker this run compared (plan.source_marker); None for a source
    # without markers, whose runs leave none.
    source_marker: str | None = None


class QuietWrites:
    """The quiet runs of one worker's claimed batch, waiting to be written under its lease."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], lease_owner: str) -> None:
        self._sessions = sessions
        self._lease_owner = lease_owner
        self._runs: list[QuietRun] = []

    def __len__(self) -> int:
        return len(self._runs)

    def add(self, run: QuietRun) -> None:
        self._runs.append(run)

    async def write(self) -> None:
        """Write every run held so far; runs added meanwhile wait for the next write."""
        runs, self._runs = self._runs, []
        if not runs:
            return
        async with write_transaction(self._sessions) as session:
            # Stamps first: both statements touch only people whose lease is still ours.
            await session.execute(
                _STAMP,
                [
                    {
                        "p_enrollment": run.enrollment_id,
                        "p_owner": self._lease_owner,
                        "p_at": run.at,
                        "p_summary": run.summary,
                    }
                    for run in runs
                ],
            )
            await session.execute(
                _RELEASE,
                [
                    {
                        "p_enrollment": run.enrollment_id,
                        "p_owner": self._lease_owner,
                        "p_link": run.delta_link,
                        "p_marker": run.source_marker,
                        "p_requests": run.requests,
                    }
                    for run in runs
                ],
            )
