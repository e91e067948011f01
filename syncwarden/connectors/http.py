"""The one ``httpx.AsyncClient`` every connector shares, with explicit timeouts and trust."""

from __future__ import annotations

from pathlib import Path

import httpx

from syncwarden.connectors.tls import ssl_context

CONNECT_TIMEOUT_SECONDS = 10.0


def request_timeout(seconds: float) -> httpx.Timeout:
    """Per-request timeouts: each service (Graph, Exchange) sets its own on every call."""
    return httpx.Timeout(seconds, connect=min(CONNECT_TIMEOUT_SECONDS, seconds))


def create_http_client(
    *, extra_ca: Path | None = None, max_connections: int = 100
) -> httpx.AsyncClient:
    """Build the shared client; the caller owns it and must ``aclose()`` it at shutdown."""
    return httpx.AsyncClient(
        verify=ssl_context(extra_ca),
        timeout=request_timeout(30.0),
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        follow_redirects=False,
        headers={"User-Agent": "Syncwarden"},
    )
