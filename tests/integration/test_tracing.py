"""OpenTelemetry spans for Graph calls, database statements and jobs; off unless configured."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.settings import Settings
from core.tracing import configure_tracing
from syncwarden.background import Job, logged_job
from syncwarden.m365 import Microsoft365

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
