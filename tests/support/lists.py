"""Many enrollments and tickets written at once, for the lists' paging and query-plan tests.

Rows go in as bulk INSERTs through Core (as an import or a data fix would write them), which
also checks that the search keys are filled without the ORM's help.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from syncwarden.core.db import write_transaction
from syncwarden.workflows.model import TicketStatus
from syncwarden.workflows.records import Decision, Enrollment, Step, Ticket

# First and last names whose keys sort differently from their text (case, accents, spaces).
FIRST_NAMES = ("Ann", "ann-marie", "Ánh", "Bea", "bo", "Émile", "Zoë", "Öz", "Ada", "ADAM")
LAST_NAMES = ("Lee", "Lovelace", "Okafor", "de la Cruz", "Ng", "Østergaard", "Zhang")
ERROR_KINDS = ("permission", "not_in_scope", "throttled")
START = dt.datetime(2026, 11, 1, 9, 0, tzinfo=dt.UTC)
_BATCH = 2000


@dataclass(frozen=True)
class SeededPerson:
    """One seeded enrollment, as the users list shows and filters it."""

    id: int
    subject_id: str
    name: str
    upn: str
    mailbox: str
    paused: bool
    error_kind: str | None
    error: str | None


def person(number: int) -> dict[str, Any]:
    """The enrollment row of seeded person ``number``: every 7th paused, every 5th failing
    (with a kind, but every 20th without one), the rest fine."""
    first = FIRST_NAMES[number % len(FIRST_NAMES)]
    last = LAST_NAMES[(number // len(FIRST_NAMES)) % len(LAST_NAMES)]
    handle = f"{first}.{last}.{number}".lower().replace(" ", "")
    failing = number % 5 == 0
    kind = None if number % 20 == 0 else ERROR_KINDS[(number // 5) % len(ERROR_KINDS)]
    return {
        "subject_id": str(uuid.UUID(int=number + 1)),
        "subject_upn": f"{handle}@example.edu",
        "subject_name": f"{first} {last} {number}",
        "profile_id": f"P-{number}",
        "mailbox": f"{handle}@mail.example.edu",
        "active": True,
        "paused": number % 7 == 0,
        "last_error": f"run {number} failed" if failing else None,
        "last_error_kind": kind if failing else None,
        "last_success_at": START + dt.timedelta(minutes=number),
    }


async def seed_enrollments(
    sessions: async_sessionmaker[AsyncSession], numbers: Sequence[int]
) -> list[SeededPerson]:
    """Active enrollments of the seeded people ``numbers``, by bulk insert."""
    rows = [person(number) for number in numbers]
    async with write_transaction(sessions) as session:
        ids: list[int] = []
        for start in range(0, len(rows), _BATCH):
            chunk = rows[start : start + _BATCH]
            result = await session.scalars(insert(Enrollment).returning(Enrollment.id), chunk)
            ids.extend(result.all())
    return [
        SeededPerson(
            row_id,
            row["subject_id"],
            row["subject_name"],
            row["subject_upn"],
            row["mailbox"],
            row["paused"],
            row["last_error_kind"],
            row["last_error"],
        )
        for row_id, row in zip(ids, rows, strict=True)
    ]


# Statuses of seeded tickets, cycled: mostly finished, some open, some failed.
TICKET_STATUSES = (
    *[TicketStatus.COMPLETED] * 12,
    TicketStatus.REJECTED,
    TicketStatus.CANCELLED,
    TicketStatus.EXPIRED,
    TicketStatus.FAILED,
    TicketStatus.AWAITING_APPROVAL,
    TicketStatus.WAITING_MANUAL,
    TicketStatus.PROVISIONING,
    TicketStatus.APPROVED,
)


# Kinds of the seeded tickets' failures, cycled.
TICKET_FAILURE_KINDS = ("permission", "no_mailbox", "not_in_scope")


@dataclass(frozen=True)
class SeededTicket:
    id: int
    status: str
    name: str
    upn: str
    failure_kind: str | None = None


def ticket(number: int) -> dict[str, Any]:
    """The row of seeded ticket ``number``, about seeded person ``number`` (so that no person
    has two open tickets). Failed tickets have a failure kind, and so does every other ticket
    under way (provisioning), as one that IT retried after it failed."""
    about = person(number)
    status = TICKET_STATUSES[number % len(TICKET_STATUSES)]
    failed_once = status is TicketStatus.FAILED or (
        status is TicketStatus.PROVISIONING and number % 40 < 20
    )
    kind = TICKET_FAILURE_KINDS[(number // 20) % len(TICKET_FAILURE_KINDS)] if failed_once else None
    return {
        "kind": "enroll",
        "status": status.value,
        "version": 3,
        "subject_id": about["subject_id"],
        "subject_upn": about["subject_upn"],
        "subject_name": about["subject_name"],
        "subject_mail": about["mailbox"],
        "requester_id": about["subject_id"],
        "requester_upn": about["subject_upn"],
        "requester_name": about["subject_name"],
        "justification": "",
        "mailbox": about["mailbox"],
        "profile_id": about["profile_id"],
        "required_approvals": 1,
        "created_at": START + dt.timedelta(minutes=number),
        "updated_at": START + dt.timedelta(minutes=number),
        "failure_kind": kind,
        "failure_reason": f"step {number} failed ({kind})" if kind else None,
    }


async def seed_tickets(
    sessions: async_sessionmaker[AsyncSession],
    numbers: Sequence[int],
    *,
    with_children: bool = False,
) -> list[SeededTicket]:
    """Tickets about the seeded people ``numbers``, by bulk insert; ``with_children`` adds a
    decision and four steps to each decided one."""
    rows = [ticket(number) for number in numbers]
    async with write_transaction(sessions) as session:
        ids: list[int] = []
        for start in range(0, len(rows), _BATCH):
            chunk = rows[start : start + _BATCH]
            result = await session.scalars(insert(Ticket).returning(Ticket.id), chunk)
            ids.extend(result.all())
        if with_children:
            # Decided tickets have a decision and steps; those still waiting have neither.
            decided = [
                row_id
                for row_id, row in zip(ids, rows, strict=True)
                if row["status"] != TicketStatus.AWAITING_APPROVAL.value
            ]
            await _seed_children(session, decided)
    return [
        SeededTicket(
            row_id, row["status"], row["subject_name"], row["subject_upn"], row["failure_kind"]
        )
        for row_id, row in zip(ids, rows, strict=True)
    ]


async def _seed_children(session: AsyncSession, ticket_ids: list[int]) -> None:
    decisions = [
        {
            "ticket_id": ticket_id,
            "approver_id": "approver",
            "approver_name": "Casey",
            "approve": True,
            "comment": "",
            "decided_at": START,
        }
        for ticket_id in ticket_ids
    ]
    steps = [
        {
            "ticket_id": ticket_id,
            "position": position,
            "name": name,
            "state": "succeeded",
            "attempt": 1,
            "idempotency_key": f"{ticket_id}:{name}",
            "params": {},
            "created_at": START,
            "updated_at": START,
        }
        for ticket_id in ticket_ids
        for position, name in enumerate(
            ("map_profile", "add_to_group", "send_instructions", "request_initial_sync")
        )
    ]
    for table, rows in ((Decision, decisions), (Step, steps)):
        for start in range(0, len(rows), _BATCH):
            await session.execute(insert(table), rows[start : start + _BATCH])
