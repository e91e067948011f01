"""The web process over real HTTP: health, readiness, metrics, body limits and the bot endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.core.db import create_engine
from syncwarden.core.settings import Mode, Settings
from syncwarden.web import create_app
from tests.support.recorder import ConnectorRecorder, message_activity

WebClient = TestClient[web.Request, web.Application]

PRODUCTION_BOT = {
    "app_id": "11111111-2222-3333-4444-555555555555",
    "tenant_id": "99999999-8888-7777-6666-555555555555",
    "client_secret": "Qm9.bot-real-looking~value_123",
}


async def client_for(settings: Settings, engine: AsyncEngine) -> WebClient:
    client: WebClient = TestClient(TestServer(create_app(settings, engine), host="127.0.0.1"))
    await client.start_server()
    return client


# Anonymous Bot Framework traffic, as the sandbox sends it; production is test_bot_auth.py's.
SANDBOX = Settings.model_validate({"mode": Mode.SANDBOX})


@pytest.fixture
async def client(migrated_engine: AsyncEngine) -> AsyncIterator[WebClient]:
    started = await client_for(SANDBOX, migrated_engine)
    yield started
    await started.close()


@pytest.fixture
async def recorder() -> AsyncIterator[ConnectorRecorder]:
    started = await ConnectorRecorder().start()
    yield started
    await started.close()


async def test_healthz_answers_alive(client: WebClient) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert (await response.json())["status"] == "ok"


async def test_readyz_is_ready_on_a_migrated_database(client: WebClient) -> None:
    response = await client.get("/readyz")
    assert response.status == 200
    assert (await response.json())["status"] == "ready"


async def test_readyz_explains_an_unmigrated_database(engine: AsyncEngine) -> None:
    client = await client_for(Settings(), engine)
    try:
        response = await client.get("/readyz")
        body = await response.json()
    finally:
        await client.close()
    assert response.status == 503
    assert "syncwarden migrate" in body["reason"]


async def test_readyz_explains_an_unreachable_database() -> None:
    engine = create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/nothing")
    client = await client_for(Settings(), engine)
    try:
        response = await client.get("/readyz")
        body = await response.json()
    finally:
        await client.close()
        await engine.dispose()
    assert response.status == 503
    assert body["reason"].startswith("database unreachable")


async def test_metrics_count_requests_by_route_and_status(
    client: WebClient,
) -> None:
    await client.get("/healthz")
    await client.post("/api/messages", data=b"x" * (300 * 1024))
    text = await (await client.get("/metrics")).text()
    assert 'syncwarden_http_requests_total{method="GET",route="/healthz",status="200"} 1.0' in text
    assert (
        'syncwarden_http_requests_total{method="POST",route="/api/messages",status="413"} 1.0'
        in text
    )


async def test_oversized_body_is_refused_with_413(client: WebClient) -> None:
    response = await client.post(
        "/api/messages",
        data=b"{" + b" " * (256 * 1024) + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 413
    assert "larger than 262144 bytes" in (await response.json())["error"]


async def test_oversized_chunked_body_is_refused_with_413(
    client: WebClient,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b" " * 8192

    response = await client.post(
        "/api/messages", data=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status == 413


async def test_request_id_is_echoed_or_generated(client: WebClient) -> None:
    echoed = await client.get("/healthz", headers={"X-Request-Id": "trace-123"})
    assert echoed.headers["X-Request-Id"] == "trace-123"
    generated = await client.get("/healthz", headers={"X-Request-Id": "bad id with spaces"})
    assert generated.headers["X-Request-Id"] != "bad id with spaces"
    assert len(generated.headers["X-Request-Id"]) == 32


async def test_sandbox_message_gets_a_help_reply_at_the_service_url(
    client: WebClient, recorder: ConnectorRecorder
) -> None:
    response = await client.post("/api/messages", json=message_activity(recorder.url, "hello"))
    assert response.status in (200, 201, 202)
    assert len(recorder.requests) == 1
    reply = recorder.requests[0]
    assert reply.method == "POST"
    assert reply.path == "/v3/conversations/a:personal-ada/activities/act-1"
    assert reply.body["type"] == "message"
    assert reply.body["replyToId"] == "act-1"
    assert reply.body["recipient"]["id"] == "29:staff-ada"
    assert "add me to calendar sync" in reply.body["text"]


@pytest.mark.parametrize("authorization", [None, "Basic abc", "Bearer"])
async def test_production_refuses_unauthenticated_activities(
    migrated_engine: AsyncEngine, recorder: ConnectorRecorder, authorization: str | None
) -> None:
    settings = Settings.model_validate({"mode": Mode.PRODUCTION, "bot": PRODUCTION_BOT})
    client = await client_for(settings, migrated_engine)
    headers = {"Authorization": authorization} if authorization else {}
    try:
        response = await client.post(
            "/api/messages", json=message_activity(recorder.url), headers=headers
        )
    finally:
        await client.close()
    assert response.status == 401
    assert recorder.requests == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "the body is not JSON"),
        (b"[]", "the body must be a JSON object (a Bot Framework activity)"),
        (b'{"type": "message"}', "the activity has no 'conversation.id'"),
    ],
)
async def test_malformed_activity_gets_400_with_the_reason(
    client: WebClient, body: bytes, reason: str
) -> None:
    response = await client.post(
        "/api/messages", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    assert (await response.json()) == {"error": reason}


async def test_undeliverable_reply_is_a_clean_500(client: WebClient) -> None:
    response = await client.post("/api/messages", json=message_activity("http://127.0.0.1:1/"))
    assert response.status == 500
    body = await response.json()
    assert body == {"error": "the activity could not be handled; the service log has the details"}
