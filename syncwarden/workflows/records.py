"""Tables of the ticket workflow: tickets, decisions, steps and enrollments.

The database, not the code, enforces the rules that concurrent requests could otherwise break:
one *open* ticket per person (a partial unique index over the open statuses) and one *active*
enrollment per person and profile. A second request racing the first therefore fails on commit
and is answered with the ticket that won.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates
from sqlalchemy.types import TypeEngine

from syncwarden.core.db import Base, UtcDateTime, utc_now
from syncwarden.core.search_keys import search_key
from syncwarden.workflows.model import TicketKind, TicketStatus

TICKET_PREFIX = "SW-"
NAME_LENGTH = 256
ADDRESS_LENGTH = 320
TICKET_NUMBER_OFFSET = 1000
_OPEN_STATUSES_SQL = ", ".join(f"'{status.value}'" for status in TicketStatus if status.is_open)
_OPEN_TICKET = text(f"status IN ({_OPEN_STATUSES_SQL})")
_HAS_FAILURE_KIND = text("failure_kind IS NOT NULL")
_ACTIVE = text("active")


def canonical_object_id(object_id: str) -> str:
    """An Entra object id as stored and compared: lower case.

    Object ids are GUIDs, whose case carries no meaning; Graph and Teams send them in lower case,
    but a person typing one may not. Stored in one case, they are compared with a plain ``=``
    that the indexes serve, instead of ``lower(column)``, which makes every lookup a full scan.
    """
    return object_id.strip().lower()


def _search_key_column(length: int) -> TypeEngine[str]:
    """A search key column: code-point order on PostgreSQL (SQLite's default already is)."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


def _key_of(source: str, longest: int) -> Callable[[DefaultExecutionContext], str]:
    """The column default that fills a search key from its source on any INSERT, the ORM's or
    a bulk one through Core (the ORM validators below keep it right on later changes)."""

    def key(context: DefaultExecutionContext) -> str:
        parameters: dict[str, Any] = context.get_current_parameters()  # type: ignore[no-untyped-call]
        return search_key(parameters.get(source) or "", longest)

    return key


class Ticket(Base):
    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer, default=1)
    # Moved by the database on every update of the row, by any writer (migration 0026's
    # triggers): what an optimistic decision checks it read the row as it still is.
    row_version: Mapped[int] = mapped_column(BigInteger, default=1, server_default="1")

    subject_id: Mapped[str] = mapped_column(String(64))
    subject_upn: Mapped[str] = mapped_column(String(320))
    subject_name: Mapped[str] = mapped_column(String(256))
    subject_mail: Mapped[str] = mapped_column(String(320))
    # Search keys of the subject's name and UPN (see search_key), for IT's ticket list.
    name_key: Mapped[str] = mapped_column(
        _search_key_column(NAME_LENGTH),
        server_default="",
        default=_key_of("subject_name", NAME_LENGTH),
        index=True,
    )
    upn_key: Mapped[str] = mapped_column(
        _search_key_column(ADDRESS_LENGTH),
        server_default="",
        default=_key_of("subject_upn", ADDRESS_LENGTH),
        index=True,
    )

    requester_id: Mapped[str] = mapped_column(String(64))
    requester_upn: Mapped[str] = mapped_column(String(320))
    requester_name: Mapped[str] = mapped_column(String(256))

    justification: Mapped[str] = mapped_column(Text, default="")
    mailbox: Mapped[str] = mapped_column(String(320))
    previous_mailbox: Mapped[str | None] = mapped_column(String(320))
    profile_id: Mapped[str | None] = mapped_column(String(128))
    profile_name: Mapped[str | None] = mapped_column(String(256))
    required_approvals: Mapped[int] = mapped_column(Integer, default=1)

    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now, onupdate=utc_now)
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    reminded_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    escalated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    # What IT does about the failure (connectors.errors.FailureKind), set with failure_reason
    # and, like it, kept when IT retries: the last failure stays on record.
    failure_kind: Mapped[str | None] = mapped_column(String(32))
    # Time-bound access (enroll and extend tickets): when the access granted ends; None: never.
    access_until: Mapped[datetime | None] = mapped_column(UtcDateTime)

    decisions: Mapped[list[Decision]] = relationship(
        back_populates="ticket", order_by="Decision.id", cascade="all, delete-orphan"
    )
    steps: Mapped[list[Step]] = relationship(
        back_populates="ticket", order_by="Step.position", cascade="all, delete-orphan"
    )

    __table_args__ = (
        # Tickets by status, newest first within one: the tickets list filtered by a status
        # reads its page in order; the status counts and clocks read their status's range.
        Index("ix_tickets_status_id", "status", "id"),
        # Tickets by the kind of their failure (``tickets error:permission``); only those
        # that failed are in it, a few among many.
        Index(
            "ix_tickets_failure_kind",
            "failure_kind",
            "status",
            "id",
            sqlite_where=_HAS_FAILURE_KIND,
            postgresql_where=_HAS_FAILURE_KIND,
        ),
        Index(
            "uq_tickets_open_subject",
            "subject_id",
            unique=True,
            sqlite_where=_OPEN_TICKET,
            postgresql_where=_OPEN_TICKET,
        ),
    )

    @validates("subject_id", "requester_id")
    def _canonical_id(self, _key: str, value: str) -> str:
        return canonical_object_id(value)

    @validates("subject_name", "subject_upn")
    def _keep_search_keys(self, key: str, value: str) -> str:
        if key == "subject_name":
            self.name_key = search_key(value, NAME_LENGTH)
        else:
            self.upn_key = search_key(value, ADDRESS_LENGTH)
        return value

    @property
    def ref(self) -> str:
        """The id people use: ``SW-1042``."""
        return ticket_ref(self.id)

    @property
    def ticket_kind(self) -> TicketKind:
        return TicketKind(self.kind)

    @property
    def ticket_status(self) -> TicketStatus:
        return TicketStatus(self.status)


def ticket_ref(ticket_id: int) -> str:
    """The number people use for the ticket with row id ``ticket_id``: ``SW-1042``."""
    return f"{TICKET_PREFIX}{TICKET_NUMBER_OFFSET + ticket_id}"


def ticket_id_from_ref(ref: str) -> int | None:
    """The row id behind ``SW-1042`` (case and spaces forgiven), or None when it is not one."""
    cleaned = ref.strip().upper().replace(" ", "")
    if not cleaned.startswith(TICKET_PREFIX):
        return None
    number = cleaned[len(TICKET_PREFIX) :]
    # ASCII digits only ("²" is a digit to isdigit() but not to int()), and a row id that fits
    # the database's integer column.
    if not (number.isascii() and number.isdecimal() and len(number) <= 10):
        return None
    row_id = int(number) - TICKET_NUMBER_OFFSET
    return row_id if 0 < row_id <= 2**31 - 1 else None


class Decision(Base):
    __tablename__ = "ticket_decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    approver_id: Mapped[str] = mapped_column(String(64))
    approver_name: Mapped[str] = mapped_column(String(256))
    approve: Mapped[bool] = mapped_column(Boolean)
    comment: Mapped[str] = mapped_column(Text, default="")
    decided_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)

    ticket: Mapped[Ticket] = relationship(back_populates="decisions")

    __table_args__ = (UniqueConstraint("ticket_id", "approver_id"),)


class Step(Base):
    """One durable unit of provisioning, written before it runs.

    ``idempotency_key`` is unique across all tickets, so a step can never be queued twice, and the
    handler uses it for outside effects that support a key (event transaction ids, message keys).
    ``lease_owner``/``lease_expires_at`` let several runner processes share the queue: a crashed
    runner's lease simply runs out.
    """

    __tablename__ = "steps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now, onupdate=utc_now)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    ticket: Mapped[Ticket] = relationship(back_populates="steps")

    __table_args__ = (UniqueConstraint("ticket_id", "position"),)


class Enrollment(Base):
    """A person in the users-to-sync registry."""

    __tablename__ = "enrollments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject_id: Mapped[str] = mapped_column(String(64), index=True)
    subject_upn: Mapped[str] = mapped_column(String(320))
    subject_name: Mapped[str] = mapped_column(String(256))
    profile_id: Mapped[str] = mapped_column(String(128))
    mailbox: Mapped[str] = mapped_column(String(320))
    provider: Mapped[str] = mapped_column(String(16), default="microsoft")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by_ticket: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    updated_by_ticket: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now, onupdate=utc_now)
    sync_requested_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_run_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_kind: Mapped[str | None] = mapped_column(String(32))
    # What the last successful sync did, in words ("2 created, 1 updated, …"), for people.
    last_sync_summary: Mapped[str | None] = mapped_column(String(200))
    # Time-bound access: when it ends (None: never), when the holder was told it is ending
    # (once per end date), and the removal ticket the end opened (once).
    access_until: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    expiry_reminded_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    expiry_ticket_id: Mapped[int | None] = mapped_column(Integer)
    # Search keys (see search_key): the users list sorts by name and finds by any of the three.
    name_key: Mapped[str] = mapped_column(
        _search_key_column(NAME_LENGTH),
        server_default="",
        default=_key_of("subject_name", NAME_LENGTH),
    )
    upn_key: Mapped[str] = mapped_column(
        _search_key_column(ADDRESS_LENGTH),
        server_default="",
        default=_key_of("subject_upn", ADDRESS_LENGTH),
        index=True,
    )
    mailbox_key: Mapped[str] = mapped_column(
        _search_key_column(ADDRESS_LENGTH),
        server_default="",
        default=_key_of("mailbox", ADDRESS_LENGTH),
        index=True,
    )

    @validates("subject_id")
    def _canonical_id(self, _key: str, value: str) -> str:
        return canonical_object_id(value)

    @validates("subject_name", "subject_upn", "mailbox")
    def _keep_search_keys(self, key: str, value: str) -> str:
        if key == "subject_name":
            self.name_key = search_key(value, NAME_LENGTH)
        elif key == "subject_upn":
            self.upn_key = search_key(value, ADDRESS_LENGTH)
        else:
            self.mailbox_key = search_key(value, ADDRESS_LENGTH)
        return value

    __table_args__ = (
        Index(
            "uq_enrollments_active_subject_profile",
            "subject_id",
            "profile_id",
            unique=True,
            sqlite_where=_ACTIVE,
            postgresql_where=_ACTIVE,
        ),
        # The users list, a page at a time in name order: all, paused or not, by error kind.
        # Each leads with what the filter fixes and ends with the page order, so a page is one
        # index range read in order, whatever the filter.
        Index("ix_enrollments_list_by_name", "active", "name_key", "id"),
        Index("ix_enrollments_list_by_pause", "active", "paused", "name_key", "id"),
        Index("ix_enrollments_list_by_error", "active", "last_error_kind", "name_key", "id"),
    )
