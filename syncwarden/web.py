"""The HTTP application: the bot endpoint plus health, readiness and metrics.

Cross-cutting HTTP concerns live here as middlewares, in this order: a request id bound to every
log line, Prometheus counters (so refused requests are counted too), and a hard cap on request
bodies (Teams activities are small; anything large is a mistake or an attack).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Iterable

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.dialogue import DialogueLogic
from bot.teams_endpoint import add_bot_routes
from core.db import ping
from core.failures import unexpected_counts
from core.logging import get_logger
from core.payloads import MAX_JSON_DEPTH, json_too_deep
from core.settings import Settings
from sync.subscriptions import MailboxSubscriptions
from syncwarden import __version__
from syncwarden.migrate import migration_status
from syncwarden.workflow_wiring import GRAPH_NOTIFICATIONS_PATH

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_READINESS_TIMEOUT_SECONDS = 3.0
_REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

log = get_logger(__name__)


class HttpMetrics:
    """Per-application Prometheus registry (not the global one, so tests can build many apps)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "syncwarden_http_requests",
            "HTTP requests answered, by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "syncwarden_http_request_duration_seconds",
            "Time to answer an HTTP request.",
            ["route"],
            registry=self.registry,
        )
        info = Counter(
            "syncwarden_build", "Build information.", ["version"], registry=self.registry
        )
        info.labels(version=__version__).inc(0)
        self.registry.register(_UnexpectedErrors())


class _UnexpectedErrors(Collector):
    """``syncwarden_unexpected_errors_total``, read from the process-wide count at each scrape."""

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "syncwarden_unexpected_errors",
            "Unexpected exceptions caught and logged with a traceback, by where they were caught.",
            labels=["where"],
        )
        for where, count in sorted(unexpected_counts().items()):
            family.add_metric([where], count)
        yield family


ENGINE = web.AppKey("engine", AsyncEngine)
NOTIFICATIONS = web.AppKey("notifications", MailboxSubscriptions)
METRICS = web.AppKey("metrics", HttpMetrics)


def create_app(
    settings: Settings,
    engine: AsyncEngine,
    dialogue: DialogueLogic | None = None,
    notifications: MailboxSubscriptions | None = None,
) -> web.Application:
    """Assemble the aiohttp application; nothing here touches the network until it is served."""
    metrics = HttpMetrics()
    app = web.Application(
        client_max_size=settings.http.max_body_bytes,
        middlewares=[
            _request_id_middleware,
            _metrics_middleware(metrics),
            _body_limit_middleware(settings.http.max_body_bytes),
        ],
    )
    app[ENGINE] = engine
    app[METRICS] = metrics
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    if notifications is not None:
        app[NOTIFICATIONS] = notifications
    app.router.add_post(GRAPH_NOTIFICATIONS_PATH, _graph_notifications)
    with warnings.catch_warnings():
        # The Agents SDK reads its configuration from a plain string key on the app.
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        add_bot_routes(app, settings, dialogue)
    return app


async def _graph_notifications(request: web.Request) -> web.Response:
    """Graph's validation handshake, then change notifications: checked, queued, 202 at once."""
    token = request.query.get("validationToken")
    if token is not None:
        return web.Response(text=token, content_type="text/plain")
    inbox = request.app.get(NOTIFICATIONS)
    if inbox is None:
        return web.json_response({"error": "change notifications are not enabled"}, status=404)
    try:
        payload = await request.json()
    except ValueError:
        return web.json_response({"error": "the body is not JSON"}, status=400)
    if not isinstance(payload, dict):
        return web.json_response({"error": "expected an object with a value list"}, status=400)
    await inbox.receive(payload)
    return web.Response(status=202)


async def _healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": __version__})


async def _readyz(request: web.Request) -> web.Response:
    """Ready means: the database answers and its schema is at this build's migration head."""
    engine = request.app[ENGINE]
    try:
        async with asyncio.timeout(_READINESS_TIMEOUT_SECONDS):
            await ping(engine)
            status = await migration_status(engine)
    except TimeoutError:
        return _unready("database did not answer within 3 seconds")
    except Exception as error:
        log.warning("readyz.database_unreachable", error_type=type(error).__name__)
        return _unready(f"database unreachable ({type(error).__name__})")
    if not status.is_current:
        return _unready(
            f"database schema is at {status.current or 'nothing'}, expected {status.head}; "
            "run `syncwarden migrate`"
        )
    return web.json_response({"status": "ready", "schema": status.current})


def _unready(reason: str) -> web.Response:
    return web.json_response({"status": "unavailable", "reason": reason}, status=503)


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@web.middleware
async def _request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get("X-Request-Id", "")
    request_id = incoming if _REQUEST_ID_PATTERN.match(incoming) else uuid.uuid4().hex
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        try:
            response = await handler(request)
        except web.HTTPException as error:
            error.headers["X-Request-Id"] = request_id
            raise
        response.headers["X-Request-Id"] = request_id
        return response


def _body_limit_middleware(limit: int) -> Middleware:
    too_large = {"error": f"request body is larger than {limit} bytes"}
    too_deep = {"error": f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels"}
    unreadable = {
        "error": "the request body could not be decoded; check its Content-Encoding and "
        "Transfer-Encoding"
    }

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.content_length is not None and request.content_length > limit:
            return web.json_response(too_large, status=413)
        if request.can_read_body:
            try:
                body = await request.read()  # cached; enforces the limit for chunked bodies
            except web.HTTPRequestEntityTooLarge:
                return web.json_response(too_large, status=413)
            except RequestPayloadError:
                # A Content-Encoding the body does not have, or a broken chunked encoding.
                return web.json_response(unreadable, status=400)
            except ConnectionResetError:
                # The client hung up mid-upload: nothing to answer and nothing went wrong here.
                log.info("http.client_gone", path=request.path)
                return web.Response(status=400)
            if json_too_deep(body):
                return web.json_response(too_deep, status=400)
        return await handler(request)

    return middleware


def _metrics_middleware(metrics: HttpMetrics) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.resource
        route_name = route.canonical if route is not None else "unmatched"
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as error:
            status = error.status
            raise
        finally:
            metrics.latency.labels(route=route_name).observe(time.perf_counter() - started)
            metrics.requests.labels(
                method=request.method, route=route_name, status=str(status)
            ).inc()

    return middleware
