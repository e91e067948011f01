"""Fixtures for tests that talk to the sandbox tenant through the production connectors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from sandbox.server import SandboxTenant
from sandbox.testing import running_sandbox
from syncwarden.m365 import Microsoft365, build_microsoft365
from tests.support.m365 import sandbox_settings

M365Factory = Callable[..., Awaitable[Microsoft365]]


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
