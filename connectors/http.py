"""The one ``httpx.AsyncClient`` every connector shares, with explicit timeouts and trust."""

from __future__ import annotations

from pathlib import Path

import httpx

from connectors.tls import ssl_context

CONNECT_TIMEOUT_SECONDS = 10.0


def create_http_client(
    *, timeout_seconds: float, extra_ca: Path | None = None, max_connections: int = 100
) -> httpx.AsyncClient:
    """Build the shared client; the caller owns it and must ``aclose()`` it at shutdown."""
    return httpx.AsyncClient(
        verify=ssl_context(extra_ca),
        timeout=httpx.Timeout(
            timeout_seconds, connect=min(CONNECT_TIMEOUT_SECONDS, timeout_seconds)
        ),
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        follow_redirects=False,
        headers={"User-Agent": "Syncwarden"},
    )
