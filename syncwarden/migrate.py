"""Applying and inspecting database migrations from inside the process.

Migrations run on a connection we open ourselves (not through Alembic's CLI) so that ``serve`` can
migrate at start-up inside its event loop. On PostgreSQL a transaction-scoped advisory lock makes
concurrent start-ups of several replicas take turns instead of racing on the same DDL.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden import migrations
from syncwarden.core.db import SQLITE_IMMEDIATE_OPTION

# Arbitrary but fixed: the advisory-lock key every Syncwarden replica agrees on for migrations.
_MIGRATION_LOCK_KEY = 0x5359_4E43_5741_5244 & 0x7FFF_FFFF_FFFF_FFFF


@dataclass(frozen=True)
class MigrationStatus:
    current: str | None
    head: str

    @property
    def is_current(self) -> bool:
        return self.current == self.head


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships at least one revision
        raise RuntimeError("no migrations found in the installed package")
    return head


async def upgrade_to_head(engine: AsyncEngine) -> MigrationStatus:
    """Apply every pending migration; safe to call from several processes at once.

    Across processes the database serialises us (an advisory lock on PostgreSQL, the write lock
    on SQLite). Within one process a lock is needed as well: Alembic keeps its migration context
    in module globals, which two interleaved coroutines would overwrite.
    """
    config = alembic_config()
    async with _process_lock(), engine.connect() as connection:
        connection = await connection.execution_options(**{SQLITE_IMMEDIATE_OPTION: True})
        async with connection.begin():
            if connection.dialect.name == "postgresql":
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
                )
            await connection.run_sync(_upgrade, config)
    return await migration_status(engine)


_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _process_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _locks.get(loop)
    if lock is None:
        lock = _locks[loop] = asyncio.Lock()
    return lock


async def migration_status(engine: AsyncEngine) -> MigrationStatus:
    async with engine.connect() as connection:
        current = await connection.run_sync(_current_revision)
    return MigrationStatus(current=current, head=head_revision())


def _upgrade(connection: Connection, config: Config) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()
