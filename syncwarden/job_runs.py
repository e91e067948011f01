"""When each calendar-bound job last ran, so a restart neither postpones nor forgets it.

A job tied to the calendar (the weekly credential digest) fires on a cron trigger in
``SCHEDULER__TIMEZONE``. Its last run is a row here; at start-up a job whose most recent due time
passed while no replica was running is run at once instead of waiting a week.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Mapped, mapped_column

from syncwarden.core.db import Base, UtcDateTime, session_factory, write_transaction


class JobRun(Base):
    __tablename__ = "job_runs"

    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_run_at: Mapped[datetime] = mapped_column(UtcDateTime)


async def last_run(engine: AsyncEngine, job_id: str) -> datetime | None:
    async with session_factory(engine)() as session:
        row = await session.get(JobRun, job_id)
        return row.last_run_at if row else None


async def record_run(engine: AsyncEngine, job_id: str, at: datetime) -> None:
    async with write_transaction(session_factory(engine)) as session:
        row = await session.get(JobRun, job_id, with_for_update=True)
        if row is None:
            session.add(JobRun(job_id=job_id, last_run_at=at))
        else:
            row.last_run_at = at
