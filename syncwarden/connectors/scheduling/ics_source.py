"""The ``ics`` source: each profile's iCalendar feed, read-only, fetched conditionally.

The last body of each feed is kept in the database with its ``ETag`` and ``Last-Modified``, so a
feed that has not changed answers 304 and costs its server nothing; the kept body is parsed
again (recurrences are expanded inside the current window, which moves every day).

A feed that cannot be fetched, or that holds an event we cannot read, makes the source
unavailable for that person rather than shorter: reading less than the whole calendar would turn
into deletions in Outlook.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from urllib.parse import quote

import httpx
from sqlalchemy import LargeBinary, String
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from syncwarden.connectors.errors import SourceUnavailableError
from syncwarden.connectors.scheduling.appointment_import import parse_appointments_ics
from syncwarden.connectors.scheduling.ports import Appointment, BusyBlock, Window
from syncwarden.core.db import Base, UtcDateTime, utc_now, write_transaction

MAX_FEED_BYTES = 20 * 1024 * 1024


class FeedCacheRecord(Base):
    __tablename__ = "ics_feed_cache"

    profile_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    etag: Mapped[str | None] = mapped_column(String(256))
    last_modified: Mapped[str | None] = mapped_column(String(64))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    fetched_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now, onupdate=utc_now)


class IcsFeedSource:
    """An :class:`connectors.scheduling.ports.AppointmentSource` over per-profile feeds."""

    name = "ics"
    accepts_busy = False

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        http: httpx.AsyncClient,
        url_template: str,
        *,
        default_zone: str = "UTC",
        timeout_seconds: float = 30.0,
    ) -> None:
        self._sessions = sessions
        self._http = http
        self._template = url_template
        self._zone = default_zone
        self._timeout = timeout_seconds

    async def list_appointments(self, profile_id: str, window: Window) -> Sequence[Appointment]:
        body = await self._fetch(profile_id)
        parsed = parse_appointments_ics(body, profile_id, window, default_zone=self._zone)
        if parsed.errors:
            raise SourceUnavailableError(
                f"the calendar feed of profile {profile_id} has unreadable entries: "
                + "; ".join(parsed.errors[:3])
            )
        return [appointment for _, appointment in parsed.appointments]

    async def write_busy(self, profile_id: str, blocks: Sequence[BusyBlock]) -> None:
        """Feeds are read-only."""

    async def _fetch(self, profile_id: str) -> bytes:
        url = self._template.replace("{profile_id}", quote(profile_id, safe=""))
        async with self._sessions() as session:
            cached = await session.get(FeedCacheRecord, profile_id)
        headers = {"Accept": "text/calendar"}
        if cached is not None and cached.etag:
            headers["If-None-Match"] = cached.etag
        if cached is not None and cached.last_modified:
            headers["If-Modified-Since"] = cached.last_modified
        try:
            response = await self._http.get(url, headers=headers, timeout=self._timeout)
        except httpx.HTTPError as error:
            # The address may carry a token: name the profile, never the URL.
            raise SourceUnavailableError(
                f"the calendar feed of profile {profile_id} could not be fetched "
                f"({type(error).__name__})"
            ) from None
        if response.status_code == 304 and cached is not None:
            return cached.body
        if response.status_code != 200:
            raise SourceUnavailableError(
                f"the calendar feed of profile {profile_id} answered {response.status_code}"
            )
        body = response.content
        if len(body) > MAX_FEED_BYTES or b"BEGIN:VCALENDAR" not in body[:4096]:
            raise SourceUnavailableError(
                f"the calendar feed of profile {profile_id} is not an iCalendar file"
            )
        async with write_transaction(self._sessions) as session:
            record = await session.get(FeedCacheRecord, profile_id)
            if record is None:
                record = FeedCacheRecord(profile_id=profile_id, body=body)
                session.add(record)
            record.body = body
            record.etag = response.headers.get("ETag")
            record.last_modified = response.headers.get("Last-Modified")
        return body
