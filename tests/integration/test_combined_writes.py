"""A commit's writes as one statement on PostgreSQL, one per table elsewhere, and the same rows
either way: what the ORM would have written (JSON, UTC times, Python-side defaults, onupdate),
the rows in order, and a repeated unique key skipped without spoiling the rest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.core.combined_writes import run_writes
from syncwarden.core.db import session_factory, write_transaction
from syncwarden.core.row_writes import RowsInsert, RowUpdate
from syncwarden.workflows.audit import AuditEvent
from syncwarden.workflows.outbox import OutboxMessage
from syncwarden.workflows.records import Ticket
from tests.support.statements import recorded_statements, tables_written

OUTBOX = cast(Table, OutboxMessage.__table__)
AUDIT = cast(Table, AuditEvent.__table__)
TICKETS = cast(Table, Ticket.__table__)
WHEN = datetime(2025, 12, 3, 9, 30, tzinfo=UTC)  # in the past: "now" is later


def message(key: str, payload: dict[str, Any]) -> dict[str, Any]:
    """An outbox row without state, attempts or next_attempt_at: the columns' defaults fill them."""
    return {"key": key, "target": "user", "recipient": "someone", "payload": payload}


# Whether the writes are the transaction's last: on SQLite they then go in the COMMIT's trip
# (core.sqlite_writes), by SQL of their own rather than SQLAlchemy's; the rows must not differ.
LAST_OR_NOT = pytest.mark.parametrize("commit_next", [False, True], ids=["then-more", "last"])


@LAST_OR_NOT
async def test_an_update_and_inserts_land_as_the_orm_would_write_them(
    migrated_engine: AsyncEngine, commit_next: bool
) -> None:
    sessions = session_factory(migrated_engine)
    async with write_transaction(sessions) as session:
        earlier = OutboxMessage(**message("k-1", {"n": 1}), created_at=WHEN)
        session.add(earlier)
        await session.flush()
        earlier_id = earlier.id
    audits = [
        {"occurred_at": WHEN, "actor": "a", "action": "first", "ticket_ref": "SW-1001",
         "before": None, "after": {"status": "approved", "by": ["Ada", "Émile"]}},
        {"occurred_at": WHEN + timedelta(seconds=1), "actor": "a", "action": "second",
         "ticket_ref": None, "before": {"x": 1.5}, "after": None},
    ]  # fmt: skip
    before = datetime.now(UTC)
    with recorded_statements(migrated_engine) as seen:
        async with write_transaction(sessions) as session:
            await run_writes(
                session,
                [
                    RowUpdate(OUTBOX, earlier_id, {"state": "sent", "sent_at": WHEN}),
                    RowsInsert(AUDIT, audits),
                    RowsInsert(
                        OUTBOX,
                        [message("k-1", {"n": "repeat"}), message("k-2", {"n": 2, "ok": True})],
                        ignore_conflicts_on="key",
                    ),
                ],
                commit_next=commit_next,
            )

    if not commit_next or migrated_engine.dialect.name == "postgresql":
        [writing] = seen.writing_transactions
        assert set().union(*map(tables_written, writing.writes)) == {"outbox", "audit_events"}
        expected = 1 if migrated_engine.dialect.name == "postgresql" else 3
        assert len(writing.writes) == expected
    async with sessions() as session:
        rows = {row.key: row for row in (await session.scalars(select(OutboxMessage))).all()}
        trail = (await session.scalars(select(AuditEvent).order_by(AuditEvent.id))).all()
    assert (rows["k-1"].state, rows["k-1"].sent_at, rows["k-1"].payload) == ("sent", WHEN, {"n": 1})
    fresh = rows["k-2"]
    assert (fresh.payload, fresh.state, fresh.attempts) == ({"n": 2, "ok": True}, "pending", 0)
    assert fresh.next_attempt_at is not None and fresh.next_attempt_at >= before
    assert [(e.action, e.occurred_at, e.before, e.after) for e in trail] == [
        (a["action"], a["occurred_at"], a["before"], a["after"]) for a in audits
    ]


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.text(st.characters(exclude_categories=["Cs"])),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8, alphabet="abcdefgh"), inner, max_size=4)
    ),
    max_leaves=12,
)


@LAST_OR_NOT
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(payloads=st.lists(st.dictionaries(st.sampled_from("pqrs"), JSON), min_size=1, max_size=5))
async def test_any_payloads_come_back_as_they_went_in(
    migrated_engine: AsyncEngine, commit_next: bool, payloads: list[dict[str, Any]]
) -> None:
    sessions = session_factory(migrated_engine)
    marker = datetime.now(UTC).isoformat()
    keys = [f"{marker}-{number}" for number in range(len(payloads))]
    async with write_transaction(sessions) as session:
        await run_writes(
            session,
            [
                RowsInsert(AUDIT, [{"actor": "p", "action": marker, "after": payloads[0]}]),
                RowsInsert(
                    OUTBOX,
                    [message(k, p) for k, p in zip(keys, payloads, strict=True)],
                    ignore_conflicts_on="key",
                ),
            ],
            commit_next=commit_next,
        )
    async with sessions() as session:
        stored = await session.execute(
            select(OutboxMessage.key, OutboxMessage.payload).where(OutboxMessage.key.in_(keys))
        )
        after = await session.scalar(select(AuditEvent.after).where(AuditEvent.action == marker))
    assert {key: payload for key, payload in stored.all()} == dict(zip(keys, payloads, strict=True))
    assert after == payloads[0]


@LAST_OR_NOT
async def test_an_update_sets_what_onupdate_sets_unless_given(
    migrated_engine: AsyncEngine, commit_next: bool
) -> None:
    sessions = session_factory(migrated_engine)
    async with write_transaction(sessions) as session:
        tickets = [
            Ticket(
                kind="enroll",
                status="awaiting_approval",
                subject_id=f"s-{n}",
                subject_upn="ada@example.edu",
                subject_name="Ada",
                subject_mail="ada@example.edu",
                requester_id=f"s-{n}",
                requester_upn="ada@example.edu",
                requester_name="Ada",
                mailbox="ada@example.edu",
                updated_at=WHEN,
            )
            for n in (1, 2)
        ]
        session.add_all(tickets)
        await session.flush()
        ids = [ticket.id for ticket in tickets]
    before = datetime.now(UTC)
    later = WHEN + timedelta(hours=1)
    async with write_transaction(sessions) as session:
        await run_writes(
            session,
            [
                RowUpdate(TICKETS, ids[0], {"status": "approved"}),
                RowUpdate(TICKETS, ids[1], {"status": "rejected", "updated_at": later}),
            ],
            commit_next=commit_next,
        )
    async with sessions() as session:
        stored = dict((await session.execute(select(Ticket.id, Ticket.updated_at))).all())
    assert stored[ids[0]] >= before, "onupdate, as a Core update applies it"
    assert stored[ids[1]] == later


async def test_none_is_stored_as_an_insert_one_row_at_a_time_stores_it(
    migrated_engine: AsyncEngine,
) -> None:
    """A JSON column's None is JSON null, not SQL NULL, either way (``before IS NULL`` finds the
    same rows whichever path wrote them)."""
    sessions = session_factory(migrated_engine)
    row = {"occurred_at": WHEN, "actor": "n", "ticket_ref": None, "before": None, "after": {}}
    async with write_transaction(sessions) as session:
        await session.execute(insert(AUDIT), [{**row, "action": "alone"}])
        await run_writes(
            session,
            [RowsInsert(AUDIT, [{**row, "action": "together"}]), RowsInsert(AUDIT, [])],
        )
        await run_writes(
            session,
            [
                RowsInsert(AUDIT, [{**row, "action": "combined"}]),
                RowsInsert(OUTBOX, [message(f"{WHEN}", {})], ignore_conflicts_on="key"),
            ],
            commit_next=True,  # the last: on SQLite, in the COMMIT's trip
        )
    async with sessions() as session:
        sql_nulls = await session.execute(
            select(AuditEvent.action, AuditEvent.before.is_(None), AuditEvent.ticket_ref)
            .where(AuditEvent.actor == "n")
            .order_by(AuditEvent.action)
        )
    assert sql_nulls.all() == [
        ("alone", False, None),
        ("combined", False, None),
        ("together", False, None),
    ]
