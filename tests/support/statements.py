"""The SQL an engine runs while a block lasts, grouped by transaction.

What a turn costs the database is behaviour a test can pin without timing anything: how many
transactions, and which of them write.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

_WRITES = ("INSERT", "UPDATE", "DELETE")
# A data-modifying WITH (core/combined_writes.py) writes every table it names after these.
_WRITTEN = re.compile(r'\b(?:INSERT INTO|UPDATE|DELETE FROM)\s+"?(\w+)"?', re.IGNORECASE)


def is_write(statement: str) -> bool:
    head = statement.lstrip().upper()
    return head.startswith(_WRITES) or (head.startswith("WITH") and bool(_WRITTEN.search(head)))


def tables_written(statement: str) -> set[str]:
    """The tables an INSERT, UPDATE or DELETE writes, every one of a combined statement's."""
    return {name.lower() for name in _WRITTEN.findall(statement)}


@dataclass
class Transaction:
    statements: list[str] = field(default_factory=list)

    @property
    def writes(self) -> list[str]:
        return [s for s in self.statements if is_write(s)]


@dataclass
class StatementLog:
    transactions: list[Transaction] = field(default_factory=list)

    @property
    def statements(self) -> list[str]:
        return [s for t in self.transactions for s in t.statements]

    @property
    def writes(self) -> list[str]:
        return [s for t in self.transactions for s in t.writes]

    @property
    def writing_transactions(self) -> list[Transaction]:
        return [t for t in self.transactions if t.writes]


@contextmanager
def recorded_statements(engine: AsyncEngine) -> Iterator[StatementLog]:
    """Every statement ``engine`` runs inside the block, in the transaction it ran in (SQLite's
    explicit ``BEGIN`` statements are the transactions' starts, not statements)."""
    log = StatementLog()
    open_by_connection: dict[int, Transaction] = {}

    def begin(connection: Any) -> None:
        transaction = Transaction()
        open_by_connection[id(connection)] = transaction
        log.transactions.append(transaction)

    def end(connection: Any) -> None:
        open_by_connection.pop(id(connection), None)

    def before(connection: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("BEGIN"):
            return
        transaction = open_by_connection.get(id(connection))
        if transaction is None:  # outside any transaction (a connection's set-up)
            transaction = Transaction()
            log.transactions.append(transaction)
        transaction.statements.append(statement)

    target = engine.sync_engine
    listeners: list[tuple[str, Callable[..., None]]] = [
        ("begin", begin),
        ("commit", end),
        ("rollback", end),
        ("before_cursor_execute", before),
    ]
    for name, listener in listeners:
        event.listen(target, name, listener)
    try:
        yield log
    finally:
        for name, listener in listeners:
            event.remove(target, name, listener)
