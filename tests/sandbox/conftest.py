"""Fixtures for sandbox tests: a running tenant per test and HTTPS clients that trust its CA."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncwarden.sandbox.server import SandboxTenant
from syncwarden.sandbox.testing import graph_client, running_sandbox

TenantFactory = Callable[..., Awaitable[SandboxTenant]]
ClientFactory = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture(autouse=True)
def _no_ca_bundle_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests lets these variables override a Session's ``verify``, so msal's ``verify=ca``
    would be ignored; production code pointed at the sandbox must unset them too."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def sandbox_factory(tmp_path: Path) -> AsyncIterator[TenantFactory]:
    """Start tenants with custom knobs; each is stopped at the end of the test."""
    started = 0
    async with AsyncExitStack() as stack:

        async def start(**knobs: Any) -> SandboxTenant:
            nonlocal started
            started += 1
            state_dir = tmp_path / f"sandbox-{started}"
            return await stack.enter_async_context(running_sandbox(state_dir=state_dir, **knobs))

        yield start


@pytest.fixture
async def tenant(sandbox_factory: TenantFactory) -> SandboxTenant:
    return await sandbox_factory()


@pytest.fixture
async def client_factory(tenant: SandboxTenant) -> AsyncIterator[ClientFactory]:
    """Graph clients holding a token for a given app (the Syncwarden app by default)."""
    async with AsyncExitStack() as stack:

        async def make(
            app: str = "Syncwarden", resource: str = "https://graph.microsoft.com"
        ) -> httpx.AsyncClient:
            return await stack.enter_async_context(
                graph_client(tenant, tenant.seed.app_ids[app], resource)
            )

        yield make


@pytest.fixture
async def graph(client_factory: ClientFactory) -> httpx.AsyncClient:
    return await client_factory()


@pytest.fixture
async def raw(tenant: SandboxTenant) -> AsyncIterator[httpx.AsyncClient]:
    """A client with no token, for the sandbox root (Entra, admin, Exchange)."""
    async with httpx.AsyncClient(
        base_url=tenant.base_url, verify=tenant.tls.client_context(), timeout=30
    ) as client:
        yield client
