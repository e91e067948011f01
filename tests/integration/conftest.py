"""Fixtures shared by the integration tests beyond those of ``tests/conftest.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.m365 import Microsoft365
from syncwarden.sandbox.server import SandboxTenant
from tests.support.workflow import Harness, workflow_harness


@pytest.fixture
async def h(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, m365: Microsoft365
) -> AsyncIterator[Harness]:
    """The workflow wired to the sandbox tenant, on the current database backend."""
    async with workflow_harness(migrated_engine, tenant, m365) as harness:
        yield harness
