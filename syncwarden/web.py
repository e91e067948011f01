"""The HTTP application: the bot endpoint plus health, readiness and metrics.

Cross-cutting HTTP concerns live here as middlewares, in this order: a request id bound to every
log line, Prometheus counters (so refused requests are counted too), and a hard cap on request
bodies in size and in time (Teams activities are small; anything large or slow is a mistake or
an attack). Timeouts for request heads and idle connections, and the connection cap, are the
server's (``syncwarden.server``): a middleware only sees a request once its head has arrived.

``/metrics`` also shows what an operator watches, read from the database at scrape time.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Select, case, func, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import ColumnElement

from syncwarden import __version__
from syncwarden.bot.dialogue import DialogueLogic
from syncwarden.bot.teams_endpoint import add_bot_routes
from syncwarden.bot.turn_limits import limited_counts
from syncwarden.core.db import ping, utc_now
from syncwarden.core.failures import unexpected_counts
from syncwarden.core.jobs_metrics import SYNC_OUTCOMES, job_counts, sync_run_counts
from syncwarden.core.logging import get_logger
from syncwarden.core.payloads import MAX_JSON_DEPTH, json_too_deep
from syncwarden.core.settings import Settings
from syncwarden.migrate import migration_status
from syncwarden.sync.credential_watch import CredentialAlert
from syncwarden.sync.errors import FailureKind
from syncwarden.sync.records import SyncState
from syncwarden.sync.subscriptions import MailboxSubscriptions
from syncwarden.workflow_wiring import GRAPH_NOTIFICATIONS_PATH
from syncwarden.workflows.model import TicketStatus
from syncwarden.workflows.outbox import OutboxMessage
from syncwarden.workflows.records import Enrollment, Step, Ticket
from syncwarden.workflows.steps import StepName, StepState

if TYPE_CHECKING:  # imported when SCIM is enabled (syncwarden.server.scim_endpoint)
    from syncwarden.scim.endpoint import ScimEndpoint

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_READINESS_TIMEOUT_SECONDS = 3.0
_REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

log = get_logger(__name__)


class HttpMetrics:
    """Per-application Prometheus registry (not the global one, so tests can build many apps).

    Besides the HTTP counters it holds what an operator watches: gauges read from the database
    at scrape time (:class:`_DatabaseGauges`), scheduled job runs and failures, and unexpected
    errors (both counted in the process).
    """

    def __init__(self, engine: AsyncEngine | None = None) -> None:
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
        self.open_connections = Gauge(
            "syncwarden_http_open_connections",
            "HTTP connections open now.",
            registry=self.registry,
        )
        self.refused_connections = Counter(
            "syncwarden_http_connections_refused",
            "Connections answered 503 and closed because SYNCWARDEN_HTTP__MAX_CONNECTIONS were "
            "open.",
            registry=self.registry,
        )
        self.timeouts = Counter(
            "syncwarden_http_timeouts",
            "Connections closed because a request's head or body did not arrive in time.",
            ["phase"],
            registry=self.registry,
        )
        for phase in ("head", "body"):
            self.timeouts.labels(phase=phase).inc(0)
        info = Counter(
            "syncwarden_build", "Build information.", ["version"], registry=self.registry
        )
        info.labels(version=__version__).inc(0)
        self.registry.register(_UnexpectedErrors())
        self.registry.register(_JobRuns())
        self.registry.register(_SyncRuns())
        self.registry.register(_TurnsLimited())
        self.database = _DatabaseGauges(engine) if engine is not None else None
        if self.database is not None:
            self.registry.register(self.database)

    async def refresh(self) -> None:
        """Read what the database-backed gauges show; called before each scrape."""
        if self.database is not None:
            await self.database.refresh()


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


class _JobRuns(Collector):
    """``syncwarden_job_runs_total`` and ``syncwarden_job_failures_total``, by job."""

    def collect(self) -> Iterable[Metric]:
        runs = CounterMetricFamily(
            "syncwarden_job_runs",
            "Scheduled job runs on this replica (skipped runs excluded), by job.",
            labels=["job"],
        )
        failures = CounterMetricFamily(
            "syncwarden_job_failures",
            "Scheduled job runs on this replica that failed with an exception, by job.",
            labels=["job"],
        )
        for job, count in sorted(job_counts().items()):
            runs.add_metric([job], count.runs)
            failures.add_metric([job], count.failures)
        yield runs
        yield failures


class _SyncRuns(Collector):
    """``syncwarden_sync_runs_total{outcome}`` and ``syncwarden_sync_run_failures_total{kind}``.

    One run is one person's sync by this replica's worker. Every outcome and kind is exported
    from the start, at 0, so that a rate or an alert on one has a series before it first
    happens. No label names a person: ten thousand enrolled people would be ten thousand series
    per counter; the per-person state is in the database (``syncwarden_sync_failing_enrollments``
    counts the people whose last run failed, by kind; the bot's ``users`` command names them).
    """

    def collect(self) -> Iterable[Metric]:
        counts = sync_run_counts()
        runs = CounterMetricFamily(
            "syncwarden_sync_runs",
            "Calendar sync runs of one person on this replica, by outcome (ok, failed, "
            "skipped: paused or gone since it was claimed, or taken over by another worker).",
            labels=["outcome"],
        )
        for outcome in SYNC_OUTCOMES:
            runs.add_metric([outcome], counts.runs.get(outcome, 0))
        failures = CounterMetricFamily(
            "syncwarden_sync_run_failures",
            "Calendar sync runs of one person on this replica that failed, by kind of failure.",
            labels=["kind"],
        )
        kinds = {kind.value: 0 for kind in FailureKind} | dict(counts.failures)
        for kind, count in sorted(kinds.items()):
            failures.add_metric([kind], count)
        yield runs
        yield failures


class _TurnsLimited(Collector):
    """``syncwarden_bot_turns_limited_total{scope}``: bot turns refused by the turn limits."""

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "syncwarden_bot_turns_limited",
            "Bot turns (messages, card clicks) refused by SYNCWARDEN_LIMITS__*, by the scope "
            "that refused them (person or conversation).",
            labels=["scope"],
        )
        for scope, count in sorted(limited_counts().items()):
            family.add_metric([scope], count)
        yield family


# Scrapes within this long of the last database read reuse it: /metrics is unauthenticated, so
# a flood of scrapes must not become a flood of queries.
DATABASE_METRICS_MAX_AGE_SECONDS = 5.0
_DATABASE_METRICS_TIMEOUT_SECONDS = 5.0
_OUTBOX_BACKLOG_STATES = ("pending", "sending")
_OUTBOX_STATES = ("pending", "sending", "sent", "failed")


@dataclass(frozen=True)
class _DatabaseSnapshot:
    tickets: dict[str, int]
    steps_failed: dict[str, int]
    outbox: dict[str, int]
    outbox_oldest_age_seconds: float
    enrollments: dict[str, int]
    sync_failing: dict[str, int]
    sync_consecutive_failures_max: int
    sync_consecutive_failures: int
    credential_alerts: dict[tuple[str, str], int]


async def _read_snapshot(connection: AsyncConnection) -> _DatabaseSnapshot:
    async def grouped(statement: Select[Any, int]) -> dict[str, int]:
        """``{value: count}`` from ``SELECT value, count(*) ... GROUP BY value``."""
        return {str(value): int(count) for value, count in await connection.execute(statement)}

    now = utc_now()
    tickets = dict.fromkeys((status.value for status in TicketStatus), 0)
    tickets |= await grouped(select(Ticket.status, func.count()).group_by(Ticket.status))
    steps_failed = dict.fromkeys((name.value for name in StepName), 0)
    steps_failed |= await grouped(
        select(Step.name, func.count())
        .where(Step.state == StepState.FAILED.value)
        .group_by(Step.name)
    )
    outbox = dict.fromkeys(_OUTBOX_STATES, 0)
    outbox |= await grouped(select(OutboxMessage.state, func.count()).group_by(OutboxMessage.state))
    oldest = await connection.scalar(
        select(func.min(OutboxMessage.created_at)).where(
            OutboxMessage.state.in_(_OUTBOX_BACKLOG_STATES)
        )
    )
    active = Enrollment.active.is_(True)
    enrollments = {"syncing": 0, "paused": 0}
    for paused, count in (
        await connection.execute(
            select(Enrollment.paused, func.count()).where(active).group_by(Enrollment.paused)
        )
    ).all():
        enrollments["paused" if paused else "syncing"] += int(count)
    sync_failing = dict.fromkeys((kind.value for kind in FailureKind), 0)
    sync_failing |= await grouped(
        select(Enrollment.last_error_kind, func.count())
        .where(active, Enrollment.last_error_kind.is_not(None))
        .group_by(Enrollment.last_error_kind)
    )
    failures_max, failing_states = (
        await connection.execute(
            select(
                func.coalesce(func.max(SyncState.consecutive_failures), 0),
                func.count().filter(SyncState.consecutive_failures > 0),
            )
            .select_from(SyncState)
            .join(Enrollment, Enrollment.id == SyncState.enrollment_id)
            .where(active)
        )
    ).one()
    alert_state = _credential_alert_state(now)
    credential_alerts = {
        (str(threshold), str(state)): int(count)
        for threshold, state, count in await connection.execute(
            select(CredentialAlert.threshold, alert_state, func.count()).group_by(
                CredentialAlert.threshold, alert_state
            )
        )
    }
    return _DatabaseSnapshot(
        tickets=tickets,
        steps_failed=steps_failed,
        outbox=outbox,
        outbox_oldest_age_seconds=max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
        enrollments=enrollments,
        sync_failing=sync_failing,
        sync_consecutive_failures_max=int(failures_max),
        sync_consecutive_failures=int(failing_states),
        credential_alerts=credential_alerts,
    )


def _credential_alert_state(now: datetime) -> ColumnElement[str]:
    """open (unanswered), acknowledged, snoozed or resolved, as a SQL expression."""
    return case(
        (CredentialAlert.resolved_at.is_not(None), literal("resolved")),
        (CredentialAlert.acknowledged_by.is_not(None), literal("acknowledged")),
        (CredentialAlert.snoozed_until > now, literal("snoozed")),
        else_=literal("open"),
    )


class _DatabaseGauges(Collector):
    """What the database says an operator should watch, read before each scrape.

    Prometheus collectors are synchronous and the database is not, so the ``/metrics`` handler
    awaits :meth:`refresh` (at most one read at a time, reused for a few seconds) and
    :meth:`collect` only formats what was read. When the read fails the families are left out
    and ``syncwarden_database_metrics_up`` is 0.
    """

    def __init__(
        self, engine: AsyncEngine, *, max_age_seconds: float = DATABASE_METRICS_MAX_AGE_SECONDS
    ) -> None:
        self._engine = engine
        self._max_age = max_age_seconds
        self._snapshot: _DatabaseSnapshot | None = None
        self._read_at: float | None = None
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        async with self._lock:
            if self._read_at is not None and time.monotonic() - self._read_at < self._max_age:
                return
            try:
                async with (
                    asyncio.timeout(_DATABASE_METRICS_TIMEOUT_SECONDS),
                    self._engine.connect() as connection,
                ):
                    self._snapshot = await _read_snapshot(connection)
            except Exception as error:  # the scrape still answers, with the gauge at 0
                log.warning("metrics.database_unreadable", error_type=type(error).__name__)
                self._snapshot = None
            self._read_at = time.monotonic()

    def collect(self) -> Iterable[Metric]:
        snapshot = self._snapshot
        yield GaugeMetricFamily(
            "syncwarden_database_metrics_up",
            "1 when the database-backed gauges below were read for this scrape, 0 when not.",
            value=0 if snapshot is None else 1,
        )
        if snapshot is None:
            return
        yield _labelled("syncwarden_tickets", "Tickets, by status.", "status", snapshot.tickets)
        yield _labelled(
            "syncwarden_steps_failed",
            "Provisioning steps that failed for good, by step.",
            "step",
            snapshot.steps_failed,
        )
        yield GaugeMetricFamily(
            "syncwarden_outbox_backlog",
            "Outbox messages waiting to be sent to Teams (pending or sending).",
            value=sum(snapshot.outbox[state] for state in _OUTBOX_BACKLOG_STATES),
        )
        yield GaugeMetricFamily(
            "syncwarden_outbox_oldest_pending_age_seconds",
            "Age of the oldest outbox message still waiting to be sent (0 when none is).",
            value=snapshot.outbox_oldest_age_seconds,
        )
        yield _labelled(
            "syncwarden_outbox_messages", "Outbox messages, by state.", "state", snapshot.outbox
        )
        yield _labelled(
            "syncwarden_sync_enrollments",
            "Active enrollments (people whose calendars are synced), syncing or paused.",
            "state",
            snapshot.enrollments,
        )
        yield _labelled(
            "syncwarden_sync_failing_enrollments",
            "Active enrollments whose last sync run failed, by the kind of failure.",
            "kind",
            snapshot.sync_failing,
        )
        yield GaugeMetricFamily(
            "syncwarden_sync_failing_in_a_row",
            "Active enrollments whose latest sync runs failed (one or more in a row).",
            value=snapshot.sync_consecutive_failures,
        )
        yield GaugeMetricFamily(
            "syncwarden_sync_consecutive_failures_max",
            "The most sync runs in a row that failed for any one active enrollment.",
            value=snapshot.sync_consecutive_failures_max,
        )
        alerts = GaugeMetricFamily(
            "syncwarden_credential_alerts",
            "Credential-expiry alerts sent, by threshold (days before expiry) and state "
            "(open, acknowledged, snoozed, resolved).",
            labels=["threshold_days", "state"],
        )
        for (threshold, state), count in sorted(snapshot.credential_alerts.items()):
            alerts.add_metric([threshold, state], count)
        yield alerts


def _labelled(name: str, documentation: str, label: str, counts: dict[str, int]) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family


ENGINE = web.AppKey("engine", AsyncEngine)
NOTIFICATIONS = web.AppKey("notifications", MailboxSubscriptions)
METRICS = web.AppKey("metrics", HttpMetrics)


def create_app(
    settings: Settings,
    engine: AsyncEngine,
    dialogue: DialogueLogic | None = None,
    notifications: MailboxSubscriptions | None = None,
    *,
    teams_endpoints: bool = True,
    scim: ScimEndpoint | None = None,
) -> web.Application:
    """Assemble the aiohttp application; nothing here touches the network until it is served.

    Without ``teams_endpoints`` (a worker) only the operational routes are served: Teams and
    Graph are pointed at the web processes, and a worker that answered them would be a second,
    unintended way in. ``scim`` (when enabled) adds Entra ID's provisioning door at /scim/v2.
    """
    metrics = HttpMetrics(engine)
    app = web.Application(
        client_max_size=settings.http.max_body_bytes,
        middlewares=[
            _request_id_middleware,
            _metrics_middleware(metrics),
            _body_limit_middleware(
                settings.http.max_body_bytes, settings.http.body_timeout_seconds, metrics
            ),
        ],
    )
    app[ENGINE] = engine
    app[METRICS] = metrics
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    if not teams_endpoints:
        return app
    if notifications is not None:
        app[NOTIFICATIONS] = notifications
    app.router.add_post(GRAPH_NOTIFICATIONS_PATH, _graph_notifications)
    if scim is not None:
        scim.add_routes(app)
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
    metrics = request.app[METRICS]
    await metrics.refresh()
    body = generate_latest(metrics.registry)
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


def _body_limit_middleware(limit: int, timeout: float, metrics: HttpMetrics) -> Middleware:
    too_large = {"error": f"request body is larger than {limit} bytes"}
    too_slow = {"error": f"the request body did not arrive within {timeout:g} seconds"}
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
                async with asyncio.timeout(timeout):
                    body = await request.read()  # cached; enforces the limit for chunked bodies
            except TimeoutError:
                # A body trickled in (or stalled): answer and close, rather than wait for it.
                metrics.timeouts.labels(phase="body").inc()
                log.info("http.body_timeout", path=request.path, seconds=timeout)
                return await _answer_and_close(request, web.json_response(too_slow, status=408))
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


async def _answer_and_close(request: web.Request, response: web.Response) -> web.Response:
    """Send ``response`` now, then close the connection.

    Returning it would make aiohttp keep reading what is left of the body for up to its
    lingering time before closing, which is what a slow client wants.
    """
    response.force_close()
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    if isinstance(request_id, str):
        response.headers["X-Request-Id"] = request_id
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()  # the transport sends what is written, then closes
    return response


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
