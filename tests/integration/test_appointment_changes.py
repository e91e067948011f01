"""The built-in source's change markers: every write moves its profile's, and no other.

The markers are kept by database triggers (migration 0024), so they are tested through writes
the source class never sees as well as its own, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.connectors.scheduling.builtin_appointments import BuiltinAppointments
from syncwarden.connectors.scheduling.ports import Appointment, ChangeMarkers, Window
from syncwarden.core.db import session_factory, write_transaction
from syncwarden.migrate import alembic_config

START = datetime(2026, 12, 7, 9, tzinfo=UTC)


def booked(number: int, subject: str | None = None) -> Appointment:
    start = START + timedelta(days=number)
    return Appointment(
        f"A-{number}", subject or f"Client {number}", start, start + timedelta(minutes=50)
    )


@pytest.fixture
def source(migrated_engine: AsyncEngine) -> BuiltinAppointments:
    return BuiltinAppointments(session_factory(migrated_engine))


async def test_every_write_moves_its_profile_marker_and_no_other(
    source: BuiltinAppointments,
) -> None:
    assert isinstance(source, ChangeMarkers)
    assert await source.change_markers(["P-1", "P-2"]) == {"P-1": "0", "P-2": "0"}
    await source.upsert("P-2", [booked(1)])
    seen = [await source.change_markers(["P-1", "P-2"])]
    sessions = source._sessions

    async def sql(statement: str) -> None:
        async with write_transaction(sessions) as session:
            await session.execute(text(statement))

    writes: list[Callable[[], Awaitable[object]]] = [
        lambda: source.upsert("P-1", [booked(1), booked(2)]),
        lambda: source.upsert("P-1", [booked(2, subject="Renamed")]),
        lambda: sql(
            "UPDATE scheduling_appointments SET location = 'Room 4' "
            "WHERE profile_id = 'P-1' AND id = 'A-1'"
        ),
        lambda: source.cancel_missing("P-1", _everything(), keep={"A-1"}),
        lambda: source.delete("P-1", "A-2"),
        lambda: sql("DELETE FROM scheduling_appointments WHERE profile_id = 'P-1'"),
    ]
    for write in writes:
        await write()
        seen.append(await source.change_markers(["P-1", "P-2"]))

    p1 = [markers["P-1"] for markers in seen]
    assert len(set(p1)) == len(p1), f"a P-1 marker came back after a write: {p1}"
    assert {markers["P-2"] for markers in seen} == {seen[0]["P-2"]}
    # An UPDATE of the whole table moves the profiles whose rows it touched, and only those.
    await sql("UPDATE scheduling_appointments SET subject = 'Both'")
    after = await source.change_markers(["P-1", "P-2"])
    assert after["P-2"] != seen[-1]["P-2"]
    assert after["P-1"] == seen[-1]["P-1"]  # P-1 had no rows left to update


async def test_moving_an_appointment_to_another_profile_moves_both(
    source: BuiltinAppointments,
) -> None:
    await source.upsert("P-1", [booked(1)])
    await source.upsert("P-2", [booked(2)])
    before = await source.change_markers(["P-1", "P-2"])
    async with write_transaction(source._sessions) as session:
        await session.execute(
            text("UPDATE scheduling_appointments SET profile_id = 'P-2' WHERE id = 'A-1'")
        )
    after = await source.change_markers(["P-1", "P-2"])
    assert after["P-1"] != before["P-1"] and after["P-2"] != before["P-2"]


async def test_a_rolled_back_write_moves_nothing(source: BuiltinAppointments) -> None:
    await source.upsert("P-1", [booked(1)])
    before = await source.change_markers(["P-1"])
    async with source._sessions() as session:
        await session.execute(text("DELETE FROM scheduling_appointments"))
        await session.rollback()
    assert await source.change_markers(["P-1"]) == before


async def test_truncate_moves_every_marker(
    source: BuiltinAppointments, migrated_engine: AsyncEngine
) -> None:
    if migrated_engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no TRUNCATE; its DELETE fires the row triggers")
    await source.upsert("P-1", [booked(1)])
    before = await source.change_markers(["P-1"])
    async with write_transaction(source._sessions) as session:
        await session.execute(text("TRUNCATE scheduling_appointments"))
    assert await source.change_markers(["P-1"]) != before


def _migrate(connection: Connection, direction: str, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    getattr(command, direction)(config, revision)


async def test_appointments_stored_before_the_migration_have_a_marker(
    engine: AsyncEngine,
) -> None:
    """Profiles with appointments get a row (so TRUNCATE moves them too), writes after the
    migration move it, and a downgrade takes the triggers away with the table."""
    insert = (
        "INSERT INTO scheduling_appointments (profile_id, id, subject, start_at, end_at, "
        "time_zone, all_day, cancelled, updated_at) VALUES "
        "(:profile, :id, 'Client', :start, :end, 'UTC', false, false, :start)"
    )
    values = {"start": START, "end": START + timedelta(hours=1)}
    async with engine.begin() as connection:
        await connection.run_sync(_migrate, "upgrade", "0023")
        await connection.execute(text(insert), {"profile": "P-1", "id": "A-1", **values})
        await connection.run_sync(_migrate, "upgrade", "0024")
    source = BuiltinAppointments(session_factory(engine))
    first = await source.change_markers(["P-1", "P-2"])
    assert first["P-1"] != "0" and first["P-2"] == "0"
    async with engine.begin() as connection:
        await connection.execute(text(insert), {"profile": "P-1", "id": "A-2", **values})
    assert (await source.change_markers(["P-1"]))["P-1"] != first["P-1"]
    async with engine.begin() as connection:
        await connection.run_sync(_migrate, "downgrade", "0023")
        await connection.execute(text(insert), {"profile": "P-1", "id": "A-3", **values})
        await connection.run_sync(_migrate, "upgrade", "0024")


def _everything() -> Window:
    return Window(START - timedelta(days=365), START + timedelta(days=365))
