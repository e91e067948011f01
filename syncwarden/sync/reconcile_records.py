"""What access reconciliation keeps between runs: delta links, the directory as it last saw it
for the people it cares about, the sync group's members, and the drift it found.

Steady reconciliation is cheap because of this: one users/delta and one membership delta
request bring only what changed since the stored links, applied to the stored mirror. Only the
people of interest are mirrored (enrolled, or members of the sync group), not the whole tenant.
A finding is kept by key (kind and person) with the fingerprint of its facts, so IT's "ignore"
holds until the facts change, and a leaver's grace period counts from when it was first seen.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from syncwarden.core.db import Base, UtcDateTime, utc_now


class ReconcileLink(Base):
    """A delta link to resume from: ``users`` or ``group:<id>``."""

    __tablename__ = "reconcile_links"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    delta_link: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)


class MirroredPerson(Base):
    """A person of interest as the directory last said: enabled, disabled or deleted, and the
    primary address mail reaches them at."""

    __tablename__ = "directory_people"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    primary_address: Mapped[str | None] = mapped_column(String(320))
    # Every SMTP address, lowercase, separated by spaces; "" when not known (see migration 0021).
    addresses: Mapped[str] = mapped_column(Text, default="", server_default="")
    name: Mapped[str] = mapped_column(String(256), default="")
    upn: Mapped[str | None] = mapped_column(String(320))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)


class MirroredMember(Base):
    """One user member of the sync group, as the membership delta last said."""

    __tablename__ = "sync_group_members"

    group_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    member_id: Mapped[str] = mapped_column(String(64), primary_key=True)


class DriftRecord(Base):
    """One difference found, open until a run no longer sees it."""

    __tablename__ = "drift_findings"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    subject_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(256), default="")
    facts: Mapped[dict[str, Any]] = mapped_column(JSON)
    fingerprint: Mapped[str] = mapped_column(String(64))
    first_seen_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    # IT said "ignore" to the facts with this fingerprint; new facts make it news again.
    ignored_fingerprint: Mapped[str | None] = mapped_column(String(64))
