"""Bot Framework JWTs in production mode, checked by the Agents SDK's own validator and our rules.

Tokens are minted by the sandbox tenant (RS256, Bot Framework issuer, our bot's app id as
audience) and the SDK fetches the signing keys from the sandbox's JWKS over HTTPS. The one thing
changed for the test is the SDK's built-in key address for the Bot Framework issuer, which would
otherwise point at Microsoft (not reachable here); and, so that a token Entra ID issued in our
tenant *could* pass the SDK if we let it, its key address for our tenant's Entra keys. The bot's
own outbound token (for its replies) comes from the sandbox instead of Microsoft's login service.

What Microsoft accepts for a bot's incoming requests is on
https://learn.microsoft.com/azure/bot-service/rest-api/bot-framework-rest-connector-authentication
("Authenticate requests from the Bot Connector service to your bot"); every refusal below is
checked to change nothing: no ticket decided, no conversation stored, nothing sent.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from jwt import PyJWKClient
from microsoft_agents.authentication.msal import MsalAuth
from microsoft_agents.hosting.core.authorization import _entra_issuers
from microsoft_agents.hosting.core.authorization.jwt import jwt_token_validator
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.bot.conversations import ConversationStore
from syncwarden.bot.dialogue import DialogueLogic
from syncwarden.connectors.tls import combined_bundle
from syncwarden.core.failures import unexpected_counts
from syncwarden.core.settings import Mode, Settings
from syncwarden.sandbox.botframework import FLAVOURS
from syncwarden.sandbox.server import SandboxTenant
from syncwarden.web import create_app
from syncwarden.workflows.model import TicketStatus
from syncwarden.workflows.ports import TicketView
from tests.support.recorder import ConnectorRecorder, message_activity
from tests.support.workflow import Harness

WebClient = TestClient[web.Request, web.Application]
BOT_ISSUER = "https://api.botframework.com"
BOT_AUTH_DOC = "https://learn.microsoft.com/azure/bot-service/rest-api/bot-framework-rest-connector-authentication"
SECRET_TEXT = "SELECT * FROM tickets WHERE ref = 'SW-1001' -- password=hunter2"


@pytest.fixture
async def recorder() -> AsyncIterator[ConnectorRecorder]:
    started = await ConnectorRecorder().start()
    yield started
    await started.close()


def production_settings(tenant: SandboxTenant) -> Settings:
    return Settings.model_validate(
        {
            "mode": Mode.PRODUCTION,
            "bot": {
                "app_id": tenant.seed.app_ids["Syncwarden Bot"],
                "tenant_id": tenant.tenant_id,
                "client_secret": tenant.seed.secret_for("Syncwarden Bot"),
            },
        }
    )


@pytest.fixture
def sdk_keys_at_sandbox(tenant: SandboxTenant, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's key addresses for the Bot Framework issuer and for our tenant's Entra issuer
    point at the sandbox, whose keys sign the Bot Framework and the Entra tokens it mints."""
    monkeypatch.setitem(
        _entra_issuers.BOTFRAMEWORK_JWKS_URIS,
        BOT_ISSUER,
        f"{tenant.base_url}/botframework/v1/.well-known/keys",
    )
    monkeypatch.setenv("SSL_CERT_FILE", combined_bundle(tenant.ca_path))
    # The SDK caches signing keys per JWKS address for the whole process. A later test's sandbox
    # can get a port an earlier one used, and so the same address with other keys: start empty.
    cache: dict[str, Any] = {}
    monkeypatch.setattr(jwt_token_validator.JwtTokenValidator._jwk_client_manager, "_cache", cache)
    # The bot's token for its replies, from the sandbox's token service.
    bot_token = tenant.mint_access_token(
        tenant.seed.app_ids["Syncwarden Bot"], "https://api.botframework.com"
    )

    async def sandbox_token(
        self: Any, resource_url: str, scopes: Any, force_refresh: bool = False
    ) -> str:
        return bot_token

    monkeypatch.setattr(MsalAuth, "get_access_token", sandbox_token)
    # Entra's keys for our tenant: where the SDK would check an Entra token's signature.
    cache[f"https://login.microsoftonline.com/{tenant.tenant_id}/discovery/v2.0/keys"] = (
        jwt_token_validator._JwkClientCacheEntry(
            PyJWKClient(f"{tenant.base_url}/{tenant.tenant_id}/discovery/v2.0/keys"),
            threading.Lock(),
        )
    )


@pytest.fixture
async def production_client(
    migrated_engine: AsyncEngine, tenant: SandboxTenant, sdk_keys_at_sandbox: None
) -> AsyncIterator[WebClient]:
    client: WebClient = TestClient(
        TestServer(create_app(production_settings(tenant), migrated_engine), host="127.0.0.1")
    )
    await client.start_server()
    yield client
    await client.close()


@pytest.fixture
async def approvals_client(
    h: Harness, migrated_engine: AsyncEngine, tenant: SandboxTenant, sdk_keys_at_sandbox: None
) -> AsyncIterator[WebClient]:
    """The production app, in production mode, with the real dialogue and workflow."""
    dialogue = DialogueLogic(ConversationStore(h.sessions), h.service, h.roster, clock=h.clock)
    client: WebClient = TestClient(
        TestServer(
            create_app(production_settings(tenant), migrated_engine, dialogue), host="127.0.0.1"
        )
    )
    await client.start_server()
    yield client
    await client.close()


def teams_activity(
    tenant: SandboxTenant, service_url: str, text: str = "help", **changes: Any
) -> dict[str, Any]:
    """A Teams 1:1 message from our own tenant."""
    activity = message_activity(service_url, text)
    activity["conversation"]["tenantId"] = tenant.tenant_id
    activity["channelData"] = {"tenant": {"id": tenant.tenant_id}}
    activity.update(changes)
    return activity


def approve_click(h: Harness, tenant: SandboxTenant, service_url: str, ticket: TicketView) -> Any:
    """An approver's click on Approve, as Teams delivers it."""
    casey = h.person("casey")
    activity = teams_activity(tenant, service_url, id="inv-approve")
    activity.update(
        type="invoke",
        name="adaptiveCard/action",
        text=None,
        replyToId="card-1",
        value={
            "action": {
                "type": "Action.Execute",
                "verb": "approve",
                "data": {"ticket": ticket.ref, "version": ticket.version},
            },
            "trigger": "manual",
        },
    )
    activity["from"] = {"id": "29:casey", "name": casey.name, "aadObjectId": casey.id}
    activity["conversation"].update(id="a:casey")
    return activity


async def post(
    client: WebClient, token: str | None, activity: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    response = await client.post("/api/messages", json=activity, headers=headers)
    body = await response.json() if response.content_type == "application/json" else {}
    return response.status, cast(dict[str, Any], body)


async def open_ticket(h: Harness) -> TicketView:
    ticket = (await h.service.request_enrollment(h.person("sasha"))).ticket
    assert ticket is not None and ticket.status == TicketStatus.AWAITING_APPROVAL
    return ticket


async def assert_nothing_happened(
    h: Harness, ticket: TicketView, recorder: ConnectorRecorder, sent_before: int
) -> None:
    still = await h.service.get_ticket(ticket.ref)
    assert still is not None and still.status == TicketStatus.AWAITING_APPROVAL
    assert still.version == ticket.version
    assert recorder.requests == [], "nothing is sent for a refused request"
    assert len(h.notifier.sent) == sent_before, "no notification is queued"
    stored = await ConversationStore(h.sessions).for_user(h.person("casey").id)
    assert stored is None, "no conversation reference (or its serviceUrl) is stored"


# ---------------------------------------------------------------- the SDK's own checks


@pytest.mark.parametrize("flavour", ["wrong_issuer", "wrong_audience", "expired", "unknown_key"])
async def test_forged_or_stale_tokens_are_refused(
    production_client: WebClient, tenant: SandboxTenant, recorder: ConnectorRecorder, flavour: str
) -> None:
    """Issuer https://api.botframework.com, audience the bot's app id, within its validity period,
    signed by a key the Bot Framework's OpenID metadata publishes, or refused.

    Source: https://learn.microsoft.com/azure/bot-service/rest-api/bot-framework-rest-connector-authentication
    ("Step 4: Verify the JWT token", requirements 3 to 6).
    """
    token = tenant.mint_channel_token(service_url=recorder.url, flavour=flavour)
    status, _ = await post(production_client, token, teams_activity(tenant, recorder.url))
    assert status == 401
    assert recorder.requests == [], "nothing is answered for a refused token"


async def test_a_genuine_channel_token_is_accepted(
    production_client: WebClient, tenant: SandboxTenant, recorder: ConnectorRecorder
) -> None:
    token = tenant.mint_channel_token(service_url=recorder.url)
    status, _ = await post(production_client, token, teams_activity(tenant, recorder.url))
    # Past authentication the turn runs; its reply then needs the bot's own token from Microsoft's
    # login service, which this machine cannot reach, so only "not refused" is asserted here.
    # Replies themselves are tested end to end in sandbox mode (test_bot_flow.py).
    assert status not in (400, 401, 403), (
        "a token signed by the channel's key, for our bot, must pass"
    )


# ---------------------------------------------------------------- only the Bot Framework gets in


async def test_a_genuine_channel_token_approves(
    approvals_client: WebClient, h: Harness, tenant: SandboxTenant, recorder: ConnectorRecorder
) -> None:
    """The baseline for the refusals below: the same click with Teams' token decides the ticket,
    and the chat's reference is kept with the serviceUrl the token named.

    Source: https://learn.microsoft.com/azure/bot-service/rest-api/bot-framework-rest-connector-authentication
    ("Step 4: Verify the JWT token").
    """
    ticket = await open_ticket(h)
    token = tenant.mint_channel_token(service_url=recorder.url)
    status, body = await post(
        approvals_client, token, approve_click(h, tenant, recorder.url, ticket)
    )
    assert status == 200, body
    assert "Approved** by" in str(body["value"])
    decided = await h.service.get_ticket(ticket.ref)
    assert decided is not None and decided.status != TicketStatus.AWAITING_APPROVAL
    stored = await ConversationStore(h.sessions).for_user(h.person("casey").id)
    assert stored is not None and stored.service_url == recorder.url


@pytest.mark.parametrize("version", ["1.0", "2.0"])
async def test_an_entra_token_of_our_tenant_for_the_bot_is_refused(
    approvals_client: WebClient,
    h: Harness,
    tenant: SandboxTenant,
    recorder: ConnectorRecorder,
    version: str,
) -> None:
    """Any app registration in our tenant can get an Entra app-only token whose audience is the
    bot's app id (v1 issuer https://sts.windows.net/{tid}/, v2
    https://login.microsoftonline.com/{tid}/v2.0). It is not a Bot Connector token: the issuer
    must be https://api.botframework.com and the key one of the Bot Framework's; with such a token
    a forged click once approved a ticket.

    Source: https://learn.microsoft.com/azure/bot-service/rest-api/bot-framework-rest-connector-authentication
    ("Step 4: Verify the JWT token", requirement 3; steps 2 and 3 for the keys).
    """
    ticket = await open_ticket(h)
    sent_before = len(h.notifier.sent)
    token = tenant.entra.mint_microsoft_app_token(
        tenant.seed.app_ids["Syncwarden"],
        tenant.seed.app_ids["Syncwarden Bot"],
        version="1.0" if version == "1.0" else "2.0",
    )
    status, _ = await post(approvals_client, token, approve_click(h, tenant, recorder.url, ticket))
    assert status == 401
    await assert_nothing_happened(h, ticket, recorder, sent_before)


@pytest.mark.parametrize("flavour", [f for f in FLAVOURS if f != "valid"])
async def test_a_forged_click_with_a_bad_channel_token_changes_nothing(
    approvals_client: WebClient,
    h: Harness,
    tenant: SandboxTenant,
    recorder: ConnectorRecorder,
    flavour: str,
) -> None:
    """Each requirement a token can fail is a 401 and nothing else: another issuer or audience,
    expired (beyond 5 minutes' skew), a key the metadata does not publish, no ``exp`` (a token
    must be within its validity period), no ``kid`` or ``alg: none`` (it must carry a valid
    signature with the metadata's algorithm, RS256, by a listed key; these were 500s), no
    ``serviceurl`` claim.

    Source: https://learn.microsoft.com/azure/bot-service/rest-api/bot-framework-rest-connector-authentication
    ("Step 4: Verify the JWT token", requirements 3 to 7).
    """
    ticket = await open_ticket(h)
    sent_before = len(h.notifier.sent)
    token = tenant.mint_channel_token(service_url=recorder.url, flavour=flavour)
    status, _ = await post(approvals_client, token, approve_click(h, tenant, recorder.url, ticket))
    assert status == 401
    await assert_nothing_happened(h, ticket, recorder, sent_before)


@pytest.mark.parametrize(
    "authorization", ["Bearer not-a-jwt", "Bearer a.b.c", "Basic dXNlcjpwYXNz", "Bearer"]
)
async def test_a_malformed_authorization_header_is_401(
    approvals_client: WebClient,
    h: Harness,
    tenant: SandboxTenant,
    recorder: ConnectorRecorder,
    authorization: str,
) -> None:
    """A request without a Bearer JWT is refused with 401, never a 500.

    Source: https://learn.microsoft.com/azure/bot-service/rest-api/bot-framework-rest-connector-authentication
    ("Step 4": requirements 1 and 2, the Bearer scheme and a JWT).
    """
    ticket = await open_ticket(h)
    sent_before = len(h.notifier.sent)
    response = await approvals_client.post(
        "/api/messages",
        json=approve_click(h, tenant, recorder.url, ticket),
        headers={"Authorization": authorization},
    )
    assert response.status == 401
    await assert_nothing_happened(h, ticket, recorder, sent_before)


async def test_a_token_for_another_service_url_is_refused(
    approvals_client: WebClient, h: Harness, tenant: SandboxTenant, recorder: ConnectorRecorder
) -> None:
    """A genuine token names the serviceUrl Teams sent the activity with; an activity that
    points elsewhere (where we would send our own Bot Framework token) is refused.

    Source: https://learn.microsoft.com/azure/bot-service/rest-api/bot-framework-rest-connector-authentication
    ("Step 4: Verify the JWT token", requirement 7: a ``serviceUrl`` claim matching the
    activity's ``serviceUrl``); Microsoft's SDK compares the two ignoring case
    (https://github.com/microsoft/botbuilder-dotnet, ``ChannelValidation.cs``).
    """
    ticket = await open_ticket(h)
    sent_before = len(h.notifier.sent)
    token = tenant.mint_channel_token(service_url="https://smba.trafficmanager.net/emea/")
    status, _ = await post(approvals_client, token, approve_click(h, tenant, recorder.url, ticket))
    assert status == 401
    await assert_nothing_happened(h, ticket, recorder, sent_before)


async def test_a_key_not_endorsed_for_the_activitys_channel_is_refused(
    approvals_client: WebClient, h: Harness, tenant: SandboxTenant, recorder: ConnectorRecorder
) -> None:
    """The signing key's ``endorsements`` must name the activity's ``channelId``; the sandbox's
    key is endorsed for ``msteams`` only, so an activity claiming to come from Web Chat is
    refused with 403.

    Source: https://learn.microsoft.com/azure/bot-service/rest-api/bot-framework-rest-connector-authentication
    ("Step 3: Get the list of valid signing keys": the ``endorsements`` property; a missing
    endorsement is answered with HTTP 403).
    """
    ticket = await open_ticket(h)
    sent_before = len(h.notifier.sent)
    token = tenant.mint_channel_token(service_url=recorder.url)
    activity = approve_click(h, tenant, recorder.url, ticket)
    activity["channelId"] = "webchat"
    status, _ = await post(approvals_client, token, activity)
    assert status == 403
    await assert_nothing_happened(h, ticket, recorder, sent_before)


@pytest.mark.parametrize("tenant_data", ["another", "none"])
async def test_an_activity_from_another_tenant_is_refused(
    approvals_client: WebClient,
    h: Harness,
    tenant: SandboxTenant,
    recorder: ConnectorRecorder,
    tenant_data: str,
) -> None:
    """Syncwarden serves one tenant: a Teams activity names its tenant in
    ``channelData.tenant.id``, and one from another tenant (or naming none) is refused with 403.

    Source: the single-tenant rule is ours (issue 12, item 3); Teams names the activity's tenant
    in ``channelData.tenant.id`` (https://learn.microsoft.com/microsoftteams/platform/bots/how-to/conversations/send-proactive-messages,
    the conversation's ``tenant``).
    """
    ticket = await open_ticket(h)
    sent_before = len(h.notifier.sent)
    token = tenant.mint_channel_token(service_url=recorder.url)
    activity = approve_click(h, tenant, recorder.url, ticket)
    if tenant_data == "another":
        other = "11111111-2222-4333-8444-555555555555"
        activity["channelData"] = {"tenant": {"id": other}}
        activity["conversation"]["tenantId"] = other
    else:
        activity["channelData"] = {}
        activity["conversation"].pop("tenantId")
    status, body = await post(approvals_client, token, activity)
    assert status == 403
    assert "tenant" in body["error"]
    await assert_nothing_happened(h, ticket, recorder, sent_before)


# ---------------------------------------------------------------- a failed turn says sorry


class ExplodingDialogue:
    """A dialogue whose every step fails with text that must never reach a person."""

    async def remember(self, incoming: Any, *, installed: bool = False) -> None:
        return None

    async def forget(self, conversation_id: str) -> None:
        return None

    async def on_message(self, incoming: Any) -> list[Any]:
        raise RuntimeError(SECRET_TEXT)

    async def on_card_action(self, incoming: Any) -> Any:
        raise RuntimeError(SECRET_TEXT)


@pytest.fixture
async def exploding_client(migrated_engine: AsyncEngine) -> AsyncIterator[WebClient]:
    dialogue = cast(DialogueLogic, ExplodingDialogue())
    client: WebClient = TestClient(
        TestServer(
            create_app(Settings.model_validate({"mode": Mode.SANDBOX}), migrated_engine, dialogue),
            host="127.0.0.1",
        )
    )
    await client.start_server()
    yield client
    await client.close()


async def test_a_failed_turn_says_sorry_without_the_exception(
    exploding_client: WebClient, recorder: ConnectorRecorder
) -> None:
    """The SDK's default turn-error handler posts "Exception caught : <text>" into the chat (with
    the SQL, on PostgreSQL); ours posts a short apology and logs and counts the failure.

    Source: not published (our rule, issue 12 item 6): no exception text reaches a person.
    """
    before = unexpected_counts().get("bot.turn", 0)
    response = await exploding_client.post(
        "/api/messages", json=message_activity(recorder.url, "status")
    )
    assert response.status in (200, 201, 202)
    assert len(recorder.requests) == 1, "one apology, and no trace activity"
    sent = recorder.requests[0].body
    assert "Sorry" in sent["text"]
    assert "hunter2" not in str(sent) and "SELECT" not in str(sent)
    assert "Exception caught" not in str(sent)
    assert unexpected_counts().get("bot.turn", 0) == before + 1


async def test_a_failed_card_action_answers_the_card_with_an_apology(
    exploding_client: WebClient, recorder: ConnectorRecorder
) -> None:
    """A card click that fails is still answered in the invoke response (HTTP 200 with a message
    body) instead of a 501, and without the exception's text.

    Source: https://learn.microsoft.com/microsoftteams/platform/task-modules-and-cards/cards/universal-actions-for-adaptive-cards/work-with-universal-actions-for-adaptive-cards
    (the ``adaptiveCard/action`` response: statusCode 200 with a message or card).
    """
    activity = message_activity(recorder.url, activity_id="inv-1")
    activity.update(
        type="invoke",
        name="adaptiveCard/action",
        text=None,
        value={"action": {"type": "Action.Execute", "verb": "approve", "data": {}}},
    )
    response = await exploding_client.post("/api/messages", json=activity)
    assert response.status == 200
    body = await response.json()
    assert body["statusCode"] == 200
    assert body["type"] == "application/vnd.microsoft.activity.message"
    assert "Sorry" in body["value"] and "hunter2" not in str(body)
    assert recorder.requests == []


async def test_an_activity_the_sdk_model_refuses_is_a_400(
    exploding_client: WebClient, recorder: ConnectorRecorder
) -> None:
    """A field of the wrong type (``text`` a number) is a 400 that names the field, not a 500,
    and no turn runs.

    Source: https://learn.microsoft.com/azure/bot-service/rest-api/bot-framework-rest-api-reference
    (Activity object: ``text`` is a string).
    """
    activity = message_activity(recorder.url, "status")
    activity["text"] = 12345
    response = await exploding_client.post("/api/messages", json=activity)
    assert response.status == 400
    assert "text" in (await response.json())["error"]
    assert recorder.requests == []
