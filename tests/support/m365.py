"""Settings and connectors aimed at a running sandbox tenant, built as production builds them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from syncwarden.core.settings import Mode, Settings
from syncwarden.m365 import Microsoft365
from syncwarden.sandbox.server import SandboxTenant

SYNCWARDEN_APP = "Syncwarden"
M365Factory = Callable[..., Awaitable[Microsoft365]]


def sandbox_settings(tenant: SandboxTenant, **overrides: Any) -> Settings:
    """Production-shaped settings whose Graph/Exchange/login addresses are the sandbox's.

    The mode is sandbox unless ``mode`` says otherwise (production is the default mode).
    """
    graph: dict[str, Any] = {
        "tenant_id": tenant.tenant_id,
        "client_id": tenant.seed.app_ids[SYNCWARDEN_APP],
        "client_secret": tenant.seed.secret_for(SYNCWARDEN_APP),
        "login_url": tenant.base_url,
        "base_url": f"{tenant.base_url}/v1.0",
        "ca_bundle": str(tenant.ca_path),
        "timeout_seconds": 10,
    }
    graph.update(overrides.pop("graph", {}))
    data: dict[str, Any] = {
        "mode": overrides.pop("mode", Mode.SANDBOX),
        "graph": graph,
        "exchange": {"base_url": tenant.base_url, **overrides.pop("exchange", {})},
        **overrides,
    }
    return Settings.model_validate(data)
