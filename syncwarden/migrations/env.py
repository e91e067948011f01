"""Alembic environment.

Syncwarden runs migrations from its own code (``syncwarden migrate`` and ``serve`` at start-up) by
passing an open connection in ``config.attributes["connection"]``. When Alembic's own command line
is used instead (developers generating a revision), the database URL comes from Syncwarden's
settings, so there is one place to configure it.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from syncwarden.schema import metadata

config = context.config


def _configure_and_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine() -> None:
    from syncwarden.core.db import create_engine
    from syncwarden.core.settings import load_settings

    engine = create_engine(load_settings().database.url.get_secret_value())
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_configure_and_run)
    finally:
        await engine.dispose()


def run() -> None:
    if context.is_offline_mode():
        raise SystemExit("Offline (--sql) migrations are not supported; run `syncwarden migrate`.")
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
    else:
        asyncio.run(_run_with_own_engine())


run()
