"""Bot Framework JWTs in production mode, checked by the Agents SDK's own validator.

Tokens are minted by the sandbox tenant (RS256, Bot Framework issuer, our bot's app id as
audience) and the SDK fetches the signing keys from the sandbox's JWKS over HTTPS. The one thing
changed for the test is the SDK's built-in key address for the Bot Framework issuer, which would
otherwise point at Microsoft (not reachable here).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from microsoft_agents.hosting.core.authorization import _entra_issuers
from microsoft_agents.hosting.core.authorization.jwt import jwt_token_validator
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.tls import combined_bundle
from core.settings import Mode, Settings
from sandbox.server import SandboxTenant
from syncwarden.web import create_app
from tests.support.recorder import ConnectorRecorder, message_activity

WebClient = TestClient[web.Request, web.Application]
BOT_ISSUER = "https://api.botframework.com"


@pytest.fixture
async def recorder() -> AsyncIterator[ConnectorRecorder]:
    started = await ConnectorRecorder().start()
    yield started
    await started.close()


@pytest.fixture
async def production_client(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[WebClient]:
    monkeypatch.setitem(
        _entra_issuers.BOTFRAMEWORK_JWKS_URIS,
        BOT_ISSUER,
        f"{tenant.base_url}/botframework/v1/.well-known/keys",
    )
    monkeypatch.setenv("SSL_CERT_FILE", combined_bundle(tenant.ca_path))
    # The SDK caches signing keys per JWKS address for the whole process. A later test's sandbox
    # can get a port an earlier one used, and so the same address with other keys: start empty.
    monkeypatch.setattr(jwt_token_validator.JwtTokenValidator._jwk_client_manager, "_cache", {})
    settings = Settings.model_validate(
        {
            "mode": Mode.PRODUCTION,
            "bot": {
                "app_id": tenant.seed.app_ids["Syncwarden Bot"],
                "tenant_id": tenant.tenant_id,
                "client_secret": tenant.seed.secret_for("Syncwarden Bot"),
            },
        }
    )
    client: WebClient = TestClient(
        TestServer(create_app(settings, migrated_engine), host="127.0.0.1")
    )
    await client.start_server()
    yield client
    await client.close()


async def post(client: WebClient, token: str, recorder: ConnectorRecorder) -> int:
    response = await client.post(
        "/api/messages",
        json=message_activity(recorder.url, "help"),
        headers={"Authorization": f"Bearer {token}"},
    )
    return response.status


@pytest.mark.parametrize("flavour", ["wrong_issuer", "wrong_audience", "expired", "unknown_key"])
async def test_forged_or_stale_tokens_are_refused(
    production_client: WebClient, tenant: SandboxTenant, recorder: ConnectorRecorder, flavour: str
) -> None:
    token = tenant.mint_channel_token(service_url=recorder.url, flavour=flavour)
    assert await post(production_client, token, recorder) == 401
    assert recorder.requests == [], "nothing is answered for a refused token"


async def test_a_genuine_channel_token_is_accepted(
    production_client: WebClient, tenant: SandboxTenant, recorder: ConnectorRecorder
) -> None:
    token = tenant.mint_channel_token(service_url=recorder.url)
    status = await post(production_client, token, recorder)
    # Past authentication the turn runs; its reply then needs the bot's own token from Microsoft's
    # login service, which this machine cannot reach, so only "not refused" is asserted here.
    # Replies themselves are tested end to end in sandbox mode (test_bot_flow.py).
    assert status not in (401, 403), "a token signed by the channel's key, for our bot, must pass"
