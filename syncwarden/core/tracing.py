"""OpenTelemetry tracing: spans for bot turns, Graph and Exchange calls, database work and jobs.

Code everywhere takes its spans from :data:`tracer`, which does nothing until a provider is
installed: with ``SYNCWARDEN_TRACING__OTLP_ENDPOINT`` unset, tracing costs a few attribute lookups
and sends nothing. Spans carry methods, routes and ids, never bodies, tokens or query values.

Each request to the bot is one ``bot.turn`` server span (``bot/teams_endpoint.py``): the kind of
activity, an invoke's name, the channel and the kind of conversation (each only when shaped like
such a name), the HTTP status and the turn's outcome. Everything the turn does (Graph calls,
database statements, the Agents SDK's own ``agents.*`` spans, which it makes through the same
global provider) is inside it, so one trace shows a turn whole.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from syncwarden.core.settings import Settings

tracer = trace.get_tracer("syncwarden")
_installed = False


def tracing_installed() -> bool:
    """Whether :func:`configure_tracing` installed a provider in this process.

    For work done per database statement, where even a span that records nothing costs
    noticeably (a few tens of microseconds on a statement SQLAlchemy runs in about two hundred).
    """
    return _installed


def configure_tracing(
    settings: Settings, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """Install a provider exporting over OTLP/HTTP (or to ``exporter``); None when tracing is off.

    OpenTelemetry allows one global provider per process, so this is called once, at start-up.
    """
    if exporter is None:
        endpoint = settings.tracing.otlp_endpoint
        if not endpoint:
            return None
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint)
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.tracing.service_name})
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    global _installed
    _installed = True
    return provider
