"""Subscriptions and token rejection through the production connectors."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from syncwarden.connectors.errors import (
    AuthenticationError,
    BadRequestError,
    MailboxAccessDeniedError,
)
from syncwarden.connectors.graph.client import GraphClient
from syncwarden.connectors.limits import ConcurrencyLimiter
from syncwarden.connectors.retry import RetryPolicy
from syncwarden.m365 import Microsoft365
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.sync.subscriptions import LIFETIME


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
    asked = (dt.datetime.now(dt.UTC) + LIFETIME).replace(microsecond=0)
    created = await m365.subscriptions.create(
        resource=f"/users/{mailbox}/events",
        notification_url=str(server.make_url("/notifications")),
        client_state="opaque-state-1",
        expires_at=asked,
    )
    assert created.expires_at == asked, "the expiry is read back from Graph's answer"
    again = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).replace(microsecond=0)
    renewed = await m365.subscriptions.renew(created.id, again)
    assert (renewed.id, renewed.expires_at) == (created.id, again)
    assert await m365.subscriptions.delete(created.id)
    assert not await m365.subscriptions.delete(created.id)


async def test_a_lifetime_beyond_graphs_limit_is_refused_not_shortened(
    m365: Microsoft365, tenant: SandboxTenant, receiver: tuple[TestServer, list[str]]
) -> None:
    server, _ = receiver
    mailbox = tenant.seed.user_ids["avery.quinlan@example.edu"]
    with pytest.raises(BadRequestError) as refused:
        await m365.subscriptions.create(
            resource=f"/users/{mailbox}/events",
            notification_url=str(server.make_url("/notifications")),
            client_state="opaque-state-1",
            expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=30),
        )
    assert refused.value.code == "ExtensionError"
    assert "minutes in the future" in refused.value.message


async def test_the_product_lifetime_fits_the_newer_10070_minute_limit_too(
    m365: Microsoft365, tenant: SandboxTenant, receiver: tuple[TestServer, list[str]]
) -> None:
    server, _ = receiver
    tenant.subscriptions.max_minutes = 10070  # the limit public code quotes from live Graph
    created = await m365.subscriptions.create(
        resource=f"/users/{tenant.seed.user_ids['avery.quinlan@example.edu']}/events",
        notification_url=str(server.make_url("/notifications")),
        client_state="opaque-state-1",
        expires_at=dt.datetime.now(dt.UTC) + LIFETIME,
    )
    assert created.expires_at is not None


async def test_a_mailbox_outside_the_access_policy_cannot_be_subscribed(
    m365: Microsoft365, tenant: SandboxTenant, receiver: tuple[TestServer, list[str]]
) -> None:
    server, _ = receiver
    with pytest.raises(MailboxAccessDeniedError) as refused:
        await m365.subscriptions.create(
            resource=f"/users/{tenant.seed.user_ids['sasha.verhoeven@example.edu']}/events",
            notification_url=str(server.make_url("/notifications")),
            client_state="opaque-state-1",
            expires_at=dt.datetime.now(dt.UTC) + LIFETIME,
        )
    assert refused.value.code == "ExtensionError" and refused.value.status == 403


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
