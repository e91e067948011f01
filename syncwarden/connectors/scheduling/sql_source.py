"""The ``sql`` source: appointments read straight from the scheduling system's own database.

On-premises scheduling systems keep their data in SQL Server or PostgreSQL. The administrator
writes one query that returns a profile's appointments; Syncwarden binds ``:profile_id``,
``:window_start`` and ``:window_end`` as parameters (never formats them into the text) and runs
it in a transaction that is always rolled back, read-only where the database supports that.
Columns are matched by name (ours, or the administrator's through ``sql_columns``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.connectors.errors import SourceUnavailableError
from syncwarden.connectors.scheduling.ports import Appointment, BusyBlock, Window

COLUMNS = ("id", "subject", "start", "end", "time_zone", "all_day", "location", "cancelled")
REQUIRED = ("id", "start", "end")


class SqlSource:
    """An :class:`connectors.scheduling.ports.AppointmentSource` over a read-only query."""

    name = "sql"
    accepts_busy = False

    def __init__(
        self,
        engine: AsyncEngine,
        query: str,
        *,
        columns: Mapping[str, str] | None = None,
        default_zone: str = "UTC",
    ) -> None:
        self._engine = engine
        self._query = text(query)
        self._columns = {ours: (columns or {}).get(ours, ours) for ours in COLUMNS}
        self._zone = default_zone

    async def list_appointments(self, profile_id: str, window: Window) -> Sequence[Appointment]:
        parameters = {
            "profile_id": profile_id,
            "window_start": window.start,
            "window_end": window.end,
        }
        try:
            async with self._engine.connect() as connection:
                if connection.dialect.name == "postgresql":
                    connection = await connection.execution_options(postgresql_readonly=True)
                transaction = await connection.begin()
                try:
                    result = await connection.execute(self._query, parameters)
                    rows = [dict(row) for row in result.mappings().all()]
                finally:
                    await transaction.rollback()
        except (SQLAlchemyError, OSError) as error:
            raise SourceUnavailableError(
                f"the scheduling database could not be read for profile {profile_id} "
                f"({type(error).__name__})"
            ) from None
        return [self._appointment(row, profile_id) for row in rows]

    async def write_busy(self, profile_id: str, blocks: Sequence[BusyBlock]) -> None:
        """The query is read-only; busy time stays in Syncwarden's own table."""

    def _appointment(self, row: Mapping[str, Any], profile_id: str) -> Appointment:
        values = {ours: row.get(theirs) for ours, theirs in self._columns.items()}
        missing = [name for name in REQUIRED if values[name] in (None, "")]
        if missing:
            raise SourceUnavailableError(
                f"the scheduling query returned a row without {', '.join(missing)} for profile "
                f"{profile_id}: map the columns with SYNCWARDEN_SYNC__SQL_COLUMNS"
            )
        zone_name = str(values["time_zone"] or self._zone)
        zone = _zone(zone_name)
        all_day = bool(values["all_day"])
        return Appointment(
            id=str(values["id"]),
            subject=str(values["subject"] or ""),
            start=_aware(values["start"], zone),
            end=_aware(values["end"], zone),
            time_zone=zone_name,
            all_day=all_day,
            location=str(values["location"]) if values["location"] else None,
            cancelled=bool(values["cancelled"]),
        )


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SourceUnavailableError(
            f"the scheduling database names an unknown zone {name!r}"
        ) from None


def _aware(value: Any, zone: ZoneInfo) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise SourceUnavailableError(
                f"the scheduling database returned a bad time {value!r}"
            ) from None
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, time())
    if not isinstance(value, datetime):
        raise SourceUnavailableError(f"the scheduling database returned a bad time {value!r}")
    return value if value.tzinfo else value.replace(tzinfo=zone)
