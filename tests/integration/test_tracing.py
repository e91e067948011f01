"""OpenTelemetry spans for bot turns, Graph calls, database statements and jobs; off unless
configured."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.background import Job, logged_job
from syncwarden.bot.conversations import ConversationStore
from syncwarden.bot.dialogue import DialogueLogic, Incoming, Reply
from syncwarden.core import tracing
from syncwarden.core.db import session_factory
from syncwarden.core.settings import Settings
from syncwarden.core.tracing import configure_tracing
from syncwarden.m365 import Microsoft365
from syncwarden.web import create_app
from tests.support.recorder import ConnectorRecorder, message_activity

WebClient = TestClient[web.Request, web.Application]

SANDBOX = Settings.model_validate({"mode": "sandbox"})


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """One provider for the module (OpenTelemetry allows one per process), shut down after."""
    exporter = InMemorySpanExporter()
    provider = configure_tracing(SANDBOX, exporter=exporter)
    assert provider is not None
    yield exporter
    provider.shutdown()


def finished(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    provider.force_flush()  # type: ignore[attr-defined]
    return list(exporter.get_finished_spans())


def test_tracing_is_off_unless_an_endpoint_is_set() -> None:
    assert configure_tracing(SANDBOX) is None


async def test_statements_make_no_span_at_all_while_tracing_is_off(
    migrated_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not even one that records nothing: off, a statement costs no span's worth of work."""
    monkeypatch.setattr(tracing, "_installed", False)
    started: list[str] = []
    monkeypatch.setattr(tracing.tracer, "start_span", lambda name, **_: started.append(name))
    async with migrated_engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    assert started == []


async def test_graph_calls_database_statements_and_jobs_are_spans(
    spans: InMemorySpanExporter, m365: Microsoft365, migrated_engine: AsyncEngine
) -> None:
    spans.clear()
    user = await m365.directory.get_user("avery.quinlan@example.edu")
    async with migrated_engine.connect() as connection:
        await connection.execute(text("SELECT 1"))

    async def digest() -> str:
        return "done"

    await logged_job(Job("test.traced", 60, digest, singleton=False), None)()

    seen = finished(spans)
    graph = [s for s in seen if s.name == "graph GET"]
    assert graph and graph[-1].attributes is not None
    assert graph[-1].attributes["http.response.status_code"] == 200
    assert "/users/" in str(graph[-1].attributes["url.path"])
    assert user.user_principal_name
    assert any(s.name == "db SELECT" for s in seen)
    assert any(s.name == "job test.traced" for s in seen)
    token = await m365.tokens.get_token(m365.endpoints.graph_scope)
    assert all(token not in str(s.attributes) for s in seen), "no token in any span"


# ------------------------------------------------------------------------------- bot turns

# Words of the message and of the sender's name: no span may carry them.
PRIVATE = ("zebra-4711", "Ada Lovelace")


@pytest.fixture
async def recorder() -> AsyncIterator[ConnectorRecorder]:
    started = await ConnectorRecorder().start()
    yield started
    await started.close()


@pytest.fixture
async def client(migrated_engine: AsyncEngine) -> AsyncIterator[WebClient]:
    """The production app in sandbox mode, with a dialogue that only needs the database."""
    dialogue = DialogueLogic(ConversationStore(session_factory(migrated_engine)), None, None)
    started: WebClient = TestClient(
        TestServer(create_app(SANDBOX, migrated_engine, dialogue), host="127.0.0.1")
    )
    await started.start_server()
    yield started
    await started.close()


def the_turn(seen: list[ReadableSpan]) -> ReadableSpan:
    turns = [s for s in seen if s.name == "bot.turn"]
    assert len(turns) == 1, [s.name for s in seen]
    return turns[0]


def descendants(of: ReadableSpan, seen: list[ReadableSpan]) -> list[ReadableSpan]:
    """Spans whose chain of parents reaches ``of``."""
    assert of.context is not None
    by_id = {s.context.span_id: s for s in seen if s.context is not None}
    found = []
    for span in seen:
        parent = span.parent
        while parent is not None:
            if parent.span_id == of.context.span_id:
                found.append(span)
                break
            above = by_id.get(parent.span_id)
            parent = above.parent if above is not None else None
    return found


async def test_a_turn_is_a_span_and_its_database_work_is_within_it(
    spans: InMemorySpanExporter, client: WebClient, recorder: ConnectorRecorder
) -> None:
    spans.clear()
    activity = message_activity(recorder.url, "help with zebra-4711")
    response = await client.post("/api/messages", json=activity)
    assert response.status == 202, await response.text()

    seen = finished(spans)
    turn = the_turn(seen)
    assert dict(turn.attributes or {}) == {
        "http.request.method": "POST",
        "http.route": "/api/messages",
        "syncwarden.request_id": response.headers["X-Request-Id"],
        "bot.activity.type": "message",
        "bot.channel_id": "msteams",
        "bot.conversation.kind": "personal",
        "http.response.status_code": 202,
        "bot.outcome": "handled",
    }
    inside = descendants(turn, seen)
    assert any(s.name.startswith("db ") for s in inside), [s.name for s in inside]
    assert all(s.context.trace_id == turn.context.trace_id for s in inside)
    everything = json.dumps([dict(s.attributes or {}) for s in seen], default=str)
    assert not [word for word in PRIVATE if word in everything]
    assert recorder.requests, "the reply was sent"


async def test_a_card_click_names_its_invoke_and_only_a_name_shaped_one(
    spans: InMemorySpanExporter, client: WebClient, recorder: ConnectorRecorder
) -> None:
    """Activity types, invoke names and channel ids come from the sender: one that is not
    shaped like a name is recorded as "other", never as sent."""
    activity = message_activity(recorder.url, "")
    activity.update(
        type="invoke", name="adaptiveCard/action", value={"action": {"verb": "refresh"}}
    )
    odd = {**activity, "name": "zebra-4711 <script>", "channelId": "msteams zebra-4711"}
    for sent in (activity, odd):
        spans.clear()
        response = await client.post("/api/messages", json=sent)
        assert response.status < 500
        attributes = dict(the_turn(finished(spans)).attributes or {})
        expected = ("adaptiveCard/action", "msteams") if sent is activity else ("other", "other")
        assert (attributes["bot.invoke.name"], attributes["bot.channel_id"]) == expected
        assert attributes["bot.activity.type"] == "invoke"


async def test_a_refused_token_is_a_turn_span_with_its_status_and_nothing_of_the_activity(
    spans: InMemorySpanExporter, client: WebClient, recorder: ConnectorRecorder
) -> None:
    """A bot whose tokens are refused answers nobody: its refusals are spans (401, outcome
    "refused") an operator can find, naming nothing of a body that was never read for them."""
    spans.clear()
    response = await client.post(
        "/api/messages",
        json=message_activity(recorder.url, "help with zebra-4711"),
        headers={"Authorization": "Bearer not-a-jwt"},
    )
    assert response.status == 401

    seen = finished(spans)
    turn = the_turn(seen)
    attributes = dict(turn.attributes or {})
    assert attributes["http.response.status_code"] == 401
    assert attributes["bot.outcome"] == "refused"
    assert not [name for name in attributes if name.startswith("bot.activity")]
    assert turn.status.status_code is not StatusCode.ERROR  # the caller's mistake, not ours
    assert not [s.name for s in descendants(turn, seen) if s.name.startswith("db ")]


async def test_a_reply_the_connector_refuses_is_an_outcome_of_the_turn(
    spans: InMemorySpanExporter, client: WebClient, recorder: ConnectorRecorder
) -> None:
    """The turn is acknowledged (see test_fuzz_endpoints.py); its span says the reply was lost."""
    recorder.scripted.append((502, {}, ""))
    spans.clear()
    response = await client.post("/api/messages", json=message_activity(recorder.url, "help"))
    assert response.status == 202

    attributes = dict(the_turn(finished(spans)).attributes or {})
    assert attributes["bot.outcome"] == "reply_refused"


class BrokenDialogue(DialogueLogic):
    async def on_message(self, incoming: Incoming) -> list[Reply]:
        raise RuntimeError("zebra-4711 broke")


async def test_a_failed_turn_is_an_error_span_though_its_apology_was_a_2xx(
    spans: InMemorySpanExporter, migrated_engine: AsyncEngine, recorder: ConnectorRecorder
) -> None:
    """The person is told it failed (the answer to the channel is a 2xx); the span says it
    failed, with the exception's type and never its text."""
    dialogue = BrokenDialogue(ConversationStore(session_factory(migrated_engine)), None, None)
    client: WebClient = TestClient(
        TestServer(create_app(SANDBOX, migrated_engine, dialogue), host="127.0.0.1")
    )
    await client.start_server()
    try:
        spans.clear()
        response = await client.post("/api/messages", json=message_activity(recorder.url))
    finally:
        await client.close()
    assert response.status < 300 and recorder.requests, "the apology was sent"

    turn = the_turn(finished(spans))
    assert (turn.attributes or {})["bot.outcome"] == "failed"
    assert turn.status.status_code is StatusCode.ERROR
    assert turn.status.description == "RuntimeError"
    assert not turn.events, "no exception event: its text may hold anything"
