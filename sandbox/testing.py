"""A plain async context manager any test folder can use to get a running sandbox tenant."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from sandbox.seed import DEFAULT_SEED, GRAPH_RESOURCE
from sandbox.server import SandboxTenant


@asynccontextmanager
async def running_sandbox(
    state_dir: Path | None = None, seed_path: Path | str = DEFAULT_SEED, **knobs: Any
) -> AsyncIterator[SandboxTenant]:
    async with SandboxTenant.start(seed_path=seed_path, state_dir=state_dir, **knobs) as tenant:
        yield tenant


@asynccontextmanager
async def graph_client(
    tenant: SandboxTenant, app_id: str | None = None, resource: str = GRAPH_RESOURCE
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client trusting the sandbox CA, already holding a token for ``app_id``."""
    token = tenant.mint_access_token(app_id or tenant.seed.app_ids["Syncwarden"], resource)
    async with httpx.AsyncClient(
        base_url=f"{tenant.base_url}/v1.0",
        verify=tenant.tls.client_context(),
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ) as client:
        yield client
