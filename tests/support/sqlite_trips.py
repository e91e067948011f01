"""Every trip to aiosqlite's thread, with the SQL that SQLite itself ran in it.

What SQLite ran is taken from SQLite (``sqlite3.Connection.set_trace_callback``), not from
SQLAlchemy's events: the SQLite driver runs a transaction's ``BEGIN`` and its last writes
without SQLAlchemy's execution (``core.sqlite_driver``, ``core.sqlite_writes``), and a test of
that must see what reached the database.
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from syncwarden.core.sqlite_driver import OneTripConnection


@dataclass
class Trip:
    name: str  # the call sent to the thread ("_run" for a statement)
    sql: list[str] = field(default_factory=list)


def sqlite_trips(monkeypatch: pytest.MonkeyPatch) -> list[Trip]:
    """The trips made from now on, in order, each with the statements SQLite ran in it."""
    trips: list[Trip] = []
    original = cast(Any, OneTripConnection._execute)

    async def traced(self: OneTripConnection, call: Any, *args: Any, **kwargs: Any) -> Any:
        trip = Trip(getattr(call, "__name__", repr(call)))
        trips.append(trip)
        if self._connection is None:  # the trip that opens the connection
            return await original(self, call, *args, **kwargs)

        connection = self._conn

        def run() -> Any:
            connection.set_trace_callback(trip.sql.append)
            try:
                return call(*args, **kwargs)
            finally:
                with contextlib.suppress(sqlite3.ProgrammingError):  # the call closed it
                    connection.set_trace_callback(None)

        return await original(self, run)

    monkeypatch.setattr(OneTripConnection, "_execute", traced)
    return trips
