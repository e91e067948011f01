"""How a UTC timestamp column binds its values: on SQLite, the one-step text must be exactly what
SQLAlchemy's own path (make UTC, then SQLite's ``DATETIME`` format) stores, or rows written one
way would compare and sort differently from rows written the other."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import TypeDecorator
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from syncwarden.core.db import UtcDateTime

SQLITE: Dialect = sqlite.dialect()
SQLITE_DATETIME: Any = sqlite.DATETIME  # both untyped in SQLAlchemy's stubs
POSTGRESQL: Any = postgresql.dialect
# Offsets strictly inside a day, to the minute, as time zones give them; times far enough from
# the ends of the calendar that converting to UTC stays inside it.
offsets = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
aware_times = st.datetimes(
    min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=offsets
)


def sqlalchemy_way(value: datetime | None) -> str | None:
    """What the column stored before: the type's own UTC step, then SQLite's ``DATETIME``."""
    adapted: Any = UtcDateTime().dialect_impl(SQLITE)
    composed = TypeDecorator.bind_processor(adapted, SQLITE)
    assert composed is not None
    stored: str | None = composed(value)
    return stored


def bind_on(dialect: Dialect) -> Any:
    return UtcDateTime().dialect_impl(dialect).bind_processor(dialect)


@given(aware_times)
def test_sqlite_text_is_what_sqlalchemy_stores(value: datetime) -> None:
    bind = bind_on(SQLITE)
    assert callable(bind)
    assert bind(value) == sqlalchemy_way(value)


def test_sqlite_text_keeps_whole_seconds_microseconds_and_none() -> None:
    bind = bind_on(SQLITE)
    assert callable(bind)
    two_hours_east = timezone(timedelta(hours=2))
    assert bind(datetime(2026, 12, 3, 10, 0, tzinfo=two_hours_east)) == "2026-12-03 08:00:00.000000"
    assert bind(datetime(2026, 1, 1, 0, 0, 0, 7, tzinfo=UTC)) == "2026-01-01 00:00:00.000007"
    assert bind(None) is None


def test_a_naive_time_is_refused_as_before() -> None:
    bind = bind_on(SQLITE)
    assert callable(bind)
    with pytest.raises(ValueError, match="naive datetime"):
        bind(datetime(2026, 12, 3, 10, 0))
    with pytest.raises(ValueError, match="naive datetime"):
        sqlalchemy_way(datetime(2026, 12, 3, 10, 0))


def test_other_storage_formats_and_databases_keep_sqlalchemy_s_way() -> None:
    class Seconds(UtcDateTime):
        impl = SQLITE_DATETIME(storage_format="%(year)04d-%(month)02d-%(day)02dT%(hour)02d")
        cache_ok = True

    bind = Seconds().dialect_impl(SQLITE).bind_processor(SQLITE)
    assert callable(bind)
    assert bind(datetime(2026, 12, 3, 10, 30, tzinfo=UTC)) == "2026-12-03T10"
    on_postgresql: Dialect = POSTGRESQL()
    value = datetime(2026, 12, 3, 10, 30, tzinfo=timezone(timedelta(hours=-5)))
    bind = bind_on(on_postgresql)
    assert callable(bind)
    assert bind(value) == value.astimezone(UTC)
