"""Subscriptions and token rejection through the production connectors."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from connectors.errors import AuthenticationError, BadRequestError
from connectors.graph.client import GraphClient
from connectors.limits import ConcurrencyLimiter
from connectors.retry import RetryPolicy
from sandbox.server import SandboxTenant
from syncwarden.m365 import Microsoft365


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[TestServer, list[str]]]:
    """A notification endpoint that answers Graph's validation handshake and records posts."""
    received: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        if "validationToken" in request.query:
            return web.Response(text=request.query["validationToken"], content_type="text/plain")
        received.append(await request.text())
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/notifications", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server, received
    await server.close()


async def test_subscription_is_created_renewed_and_deleted(
    m365: Microsoft365, tenant: SandboxTenant, receiver: tuple[TestServer, list[str]]
) -> None:
    server, _ = receiver
    mailbox = tenant.seed.user_ids["avery.quinlan@example.edu"]
    asked = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    created = await m365.subscriptions.create(
        resource=f"/users/{mailbox}/events",
        notification_url=str(server.make_url("/notifications")),
        client_state="opaque-state-1",
        expires_at=asked,
    )
    assert created.expires_at is not None
    assert created.expires_at < asked, "Graph grants less than asked for events; we keep its answer"
    renewed = await m365.subscriptions.renew(
        created.id, dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    )
    assert renewed.id == created.id
    assert await m365.subscriptions.delete(created.id)
    assert not await m365.subscriptions.delete(created.id)


async def test_subscription_refused_when_the_endpoint_fails_validation(
    m365: Microsoft365, tenant: SandboxTenant
) -> None:
    mailbox = tenant.seed.user_ids["avery.quinlan@example.edu"]
    with pytest.raises(BadRequestError):
        await m365.subscriptions.create(
            resource=f"/users/{mailbox}/events",
            notification_url="http://127.0.0.1:9/nobody-listens",
            client_state="x",
            expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
        )


class ForgedTokens:
    """A token provider handing out a token the tenant never issued."""

    def __init__(self) -> None:
        self.invalidated = 0

    async def get_token(self, scope: str) -> str:
        return "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."

    def invalidate(self, scope: str) -> None:
        self.invalidated += 1


async def test_a_rejected_token_is_refreshed_once_then_reported(m365: Microsoft365) -> None:
    tokens = ForgedTokens()
    client = GraphClient(
        m365.http,
        tokens,
        base_url=m365.endpoints.graph_base_url,
        scope=m365.endpoints.graph_scope,
        limiter=ConcurrencyLimiter(global_limit=4),
        retry=RetryPolicy(),
    )
    with pytest.raises(AuthenticationError) as raised:
        await client.get("users/avery.quinlan@example.edu")
    assert raised.value.status == 401
    assert tokens.invalidated == 1
