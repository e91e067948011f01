"""Shared fixtures.

``database_url`` is parametrized: every test that uses it runs on SQLite, and also on PostgreSQL
when ``SYNCWARDEN_TEST_POSTGRES_URL`` points at a server (CI sets it). Each test gets a database
of its own (a fresh SQLite file, or a freshly created PostgreSQL database dropped afterwards), so
tests never see each other's rows and can run in any order.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.core.db import create_engine
from syncwarden.m365 import Microsoft365, build_microsoft365
from syncwarden.migrate import upgrade_to_head
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.sandbox.testing import running_sandbox
from tests.support.m365 import M365Factory, sandbox_settings

POSTGRES_ENV = "SYNCWARDEN_TEST_POSTGRES_URL"


def _backends() -> list[str]:
    return ["sqlite", "postgresql"] if os.environ.get(POSTGRES_ENV) else ["sqlite"]


@pytest.fixture(autouse=True)
def _isolated_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Keep the developer's own SYNCWARDEN_* variables and .env out of every test."""
    for name in list(os.environ):
        if name.startswith("SYNCWARDEN_") and name != POSTGRES_ENV:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(params=_backends())
async def database_url(
    request: pytest.FixtureRequest, tmp_path: os.PathLike[str]
) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/syncwarden-test.db"
        return
    admin_url = make_url(os.environ[POSTGRES_ENV])
    name = f"sw_test_{uuid.uuid4().hex[:16]}"
    dsn = admin_url.set(drivername="postgresql").render_as_string(hide_password=False)
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on an empty database of the current backend."""
    created = create_engine(database_url)
    try:
        yield created
    finally:
        await created.dispose()


@pytest.fixture
async def migrated_engine(engine: AsyncEngine) -> AsyncEngine:
    """An engine whose database has every migration applied."""
    await upgrade_to_head(engine)
    return engine


@pytest.fixture
async def tenant(tmp_path: Path) -> AsyncIterator[SandboxTenant]:
    async with running_sandbox(state_dir=tmp_path / "sandbox") as started:
        yield started


@pytest.fixture
async def m365_factory(tenant: SandboxTenant) -> AsyncIterator[M365Factory]:
    """Build connectors with setting overrides; each is closed at the end of the test."""
    async with AsyncExitStack() as stack:

        async def build(**overrides: Any) -> Microsoft365:
            built = build_microsoft365(sandbox_settings(tenant, **overrides))
            stack.push_async_callback(built.aclose)
            return built

        yield build


@pytest.fixture
async def m365(m365_factory: M365Factory) -> Microsoft365:
    return await m365_factory()
