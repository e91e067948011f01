"""The sync worker's memory: one state row per enrollment, event links and busy blocks.

An *event link* ties a source appointment to the Outlook event we created for it, with the
fingerprint of what we wrote and the ``changeKey`` Outlook gave that version. Links are what make
a steady-state run cost nothing: no fingerprint changed and no foreign ``changeKey`` seen means
no write. ``generation`` counts re-creations after someone deleted the event in Outlook; it is
part of the next ``transactionId`` so the re-creation is not mistaken for the first create.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from syncwarden.core.db import Base, UtcDateTime, utc_now


class SyncState(Base):
    __tablename__ = "sync_states"

    enrollment_id: Mapped[int] = mapped_column(
        ForeignKey("enrollments.id", ondelete="CASCADE"), primary_key=True
    )
    # Set by "sync now", a change notification or a new enrollment; cleared when a run claims it.
    requested_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    last_run_started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    delta_link: Mapped[str | None] = mapped_column(Text)
    delta_started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # The calendar window the stored delta round covers. Graph reports changes outside it as
    # removed, so every run of that round reads and writes inside this window only.
    delta_window_start: Mapped[datetime | None] = mapped_column(UtcDateTime)
    delta_window_end: Mapped[datetime | None] = mapped_column(UtcDateTime)
    source_count: Mapped[int] = mapped_column(Integer, default=0)
    # The source read and plan inputs of the last run that left Outlook exactly as planned
    # (plan.source_fingerprint); None after any run that left something for the next one. A
    # run that matches it and whose delta round saw nothing has nothing to do.
    source_fingerprint: Mapped[str | None] = mapped_column(String(64))
    # The source's change marker read before that run's read (plan.source_marker), kept with
    # the fingerprint: a run that finds the same marker need not read the source at all.
    source_marker: Mapped[str | None] = mapped_column(String(64))
    created: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    deleted: Mapped[int] = mapped_column(Integer, default=0)
    recreated: Mapped[int] = mapped_column(Integer, default=0)
    busy_blocks: Mapped[int] = mapped_column(Integer, default=0)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)


class EventLink(Base):
    __tablename__ = "sync_event_links"

    enrollment_id: Mapped[int] = mapped_column(
        ForeignKey("enrollments.id", ondelete="CASCADE"), primary_key=True
    )
    source_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(512), index=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    change_key: Mapped[str | None] = mapped_column(String(128))
    generation: Mapped[int] = mapped_column(Integer, default=0)
    starts_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ends_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now, onupdate=utc_now)


class BusyBlockRecord(Base):
    __tablename__ = "sync_busy_blocks"

    enrollment_id: Mapped[int] = mapped_column(
        ForeignKey("enrollments.id", ondelete="CASCADE"), primary_key=True
    )
    event_id: Mapped[str] = mapped_column(String(512), primary_key=True)
    start_at: Mapped[datetime] = mapped_column(UtcDateTime)
    end_at: Mapped[datetime] = mapped_column(UtcDateTime)
    show_as: Mapped[str] = mapped_column(String(32), default="busy")
