"""Posting a cmdlet to the sandbox's Exchange admin endpoint as an app would, for sandbox tests."""

from __future__ import annotations

from typing import Any

import httpx

from syncwarden.sandbox.seed import EXCHANGE_RESOURCE
from syncwarden.sandbox.server import SandboxTenant


async def invoke(
    tenant: SandboxTenant,
    raw: httpx.AsyncClient,
    body: dict[str, Any],
    *,
    app: str = "Syncwarden",
    token: str | None = None,
    url: str | None = None,
) -> httpx.Response:
    """POST ``body`` to ``InvokeCommand`` with ``app``'s Exchange token (or the given one)."""
    token = token or tenant.mint_access_token(tenant.seed.app_ids[app], EXCHANGE_RESOURCE)
    return await raw.post(
        url or f"/adminapi/beta/{tenant.tenant_id}/InvokeCommand",
        json=body,
        headers={
            "Authorization": f"Bearer {token}",
            "X-AnchorMailbox": (
                f"APP:SystemMailbox{{bb558c35-97f1-4cb9-8ff7-d53741dc928c}}@{tenant.tenant_id}"
            ),
        },
    )
