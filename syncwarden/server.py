"""Process start-up and shutdown for ``syncwarden serve``.

Start-up order matters: refuse a broken configuration before touching anything, then migrate,
then listen. Shutdown on SIGTERM/SIGINT stops accepting connections, lets in-flight requests finish
(up to ``http.shutdown_timeout_seconds``) and closes the database pool.

The listener defends itself against slow and idle clients (:func:`listening`): a request head
must arrive within ``http.header_timeout_seconds``, an idle kept-alive connection closes after
``http.keepalive_timeout_seconds``, and no more than ``http.max_connections`` are open at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import httpx
from aiohttp import web
from aiohttp.streams import StreamReader
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from syncwarden import __version__
from syncwarden.background import BackgroundWork
from syncwarden.bot.dialogue import DialogueLogic
from syncwarden.bot.turn_limits import TurnLimiter
from syncwarden.connectors.errors import ConnectorError
from syncwarden.core.db import create_engine, session_factory
from syncwarden.core.errors import ConfigurationError
from syncwarden.core.logging import get_logger
from syncwarden.core.loop_errors import report_loop_errors
from syncwarden.core.planner_statistics import refresh_planner_statistics
from syncwarden.core.settings import HttpSettings, Settings, find_problems
from syncwarden.core.tracing import configure_tracing
from syncwarden.demo_data import load_demo_scheduling
from syncwarden.doctor import Doctor
from syncwarden.m365 import Microsoft365, build_microsoft365
from syncwarden.migrate import upgrade_to_head
from syncwarden.sandbox_process import settings_for_sandbox, start_sandbox
from syncwarden.sync.subscriptions import MailboxSubscriptions
from syncwarden.web import METRICS, HttpMetrics, create_app
from syncwarden.workflow_wiring import (
    BotTokens,
    Workflows,
    build_teams_delivery,
    build_workflows,
)

if TYPE_CHECKING:  # imported when SCIM is enabled (see scim_endpoint)
    from syncwarden.scim.endpoint import ScimEndpoint

log = get_logger(__name__)


def ensure_startable(settings: Settings) -> None:
    problems = find_problems(settings)
    if problems:
        raise ConfigurationError(problems)


SANDBOX_STATE_DIR = Path("var/sandbox")


class Role(StrEnum):
    """What one process does. Any number of each may share one PostgreSQL database."""

    # Teams' endpoint and the background work: the single-process deployment.
    ALL = "all"
    # Only the endpoints Teams and Graph call (and /healthz, /readyz, /metrics).
    WEB = "web"
    # Only the background work (provisioning steps, message delivery, sync, scheduled jobs),
    # with /healthz, /readyz and /metrics for the platform's probes and Prometheus.
    WORKER = "worker"


async def serve(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    with_sandbox: bool = False,
    role: Role = Role.ALL,
) -> None:
    """Run the process until ``stop`` is set or the process receives SIGTERM/SIGINT.

    With ``with_sandbox`` the sandbox tenant is started first, as a child process, and the
    Microsoft 365 settings are pointed at it.
    """
    ensure_startable(settings)
    if with_sandbox and settings.is_production:
        raise ConfigurationError(
            ["--sandbox starts the sandbox tenant, which production never uses"]
        )
    if role is Role.WORKER and not settings.scheduler.enabled:
        raise ConfigurationError(
            [
                "a worker runs the background work, which SYNCWARDEN_SCHEDULER__ENABLED=false "
                "turns off: enable it for the worker, or run 'syncwarden serve' instead"
            ]
        )
    report_loop_errors(asyncio.get_running_loop())
    async with contextlib.AsyncExitStack() as stack:
        tracing = configure_tracing(settings)
        if tracing is not None:
            stack.callback(tracing.shutdown)  # flushes the spans still queued
            log.info("tracing.enabled", endpoint=settings.tracing.otlp_endpoint)
        if with_sandbox:
            sandbox = await start_sandbox(SANDBOX_STATE_DIR)
            stack.push_async_callback(sandbox.stop)
            settings = settings_for_sandbox(settings, sandbox.ready)
            log.info("sandbox.started", base_url=sandbox.ready["base_url"])
        engine = create_engine(
            settings.database.url.get_secret_value(),
            echo=settings.database.echo,
            pool_size=settings.database.pool_size,
            max_overflow=settings.database.max_overflow,
        )
        stack.push_async_callback(engine.dispose)
        status = await upgrade_to_head(engine)
        log.info("database.migrated", schema=status.current)
        if await refresh_planner_statistics(engine):
            log.info("database.statistics_refreshed")
        sessions = session_factory(engine)
        if with_sandbox:  # demo profiles and appointments, only into empty tables
            await load_demo_scheduling(settings, sessions)
        m365 = build_microsoft365(settings) if settings.graph.client_id else None
        if m365 is not None:
            stack.push_async_callback(m365.aclose)
            await _report_microsoft365(m365)
        teams_http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0))
        stack.push_async_callback(teams_http.aclose)
        # With Microsoft 365, delivery can install the Teams app for someone it has no chat with.
        dispatcher, conversations = build_teams_delivery(settings, sessions, teams_http, m365=m365)
        workflows = None
        if m365 is not None:
            workflows = build_workflows(settings, sessions, m365, on_notification=dispatcher.wake)
            if workflows is not None:
                stack.push_async_callback(workflows.sync.aclose)
            if workflows is not None:
                await _warn_about_own_credentials(workflows)
        if workflows is None and role is Role.WORKER:
            raise ConfigurationError(
                [
                    "a worker has nothing to do without Microsoft 365 and the sync group: set "
                    "SYNCWARDEN_GRAPH__CLIENT_ID and SYNCWARDEN_GRAPH__SYNC_GROUP_ID"
                ]
            )
        background: BackgroundWork | None = None
        if workflows is not None and settings.scheduler.enabled and role is not Role.WEB:
            work = background = BackgroundWork(settings, workflows, dispatcher, engine=engine)
            stack.push_async_callback(work.stop)  # harmless if it never started
            workflows.sync.subscriptions.on_requested = lambda: work.kick("sync.requested")
        dialogue = DialogueLogic(
            conversations,
            workflows.service if workflows else None,
            workflows.roster if workflows else None,
            credentials=workflows.credentials if workflows else None,
            doctor=Doctor(settings, engine, sessions, m365, BotTokens(settings)),
            sync=workflows.sync.worker if workflows else None,
            drift=workflows.drift if workflows else None,
            limits=TurnLimiter.from_settings(settings.limits),
        )
        subscriptions = workflows.sync.subscriptions if workflows else None
        scim = scim_endpoint(settings, sessions, workflows)
        await _serve_http(
            settings, engine, dialogue, stop, subscriptions, role, background=background, scim=scim
        )
    log.info("syncwarden.stopped")


def scim_endpoint(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], workflows: Workflows | None
) -> ScimEndpoint | None:
    """Entra ID's provisioning door, when enabled; it needs the workflow to open tickets.

    Imported only then: the SCIM libraries' models take about a second and a half of CPU to
    import, which every start (and every restart after a crash) would pay for nothing.
    """
    if not settings.scim.enabled:
        return None
    if workflows is None:
        log.warning(
            "scim.unavailable",
            hint="SCIM needs Microsoft 365 and the sync group (SYNCWARDEN_GRAPH__*)",
        )
        return None
    from syncwarden.scim.endpoint import ScimEndpoint

    return ScimEndpoint(
        settings.scim,
        sessions,
        workflows.provisioning,
        https_only=settings.is_production,
        public_host=settings.bot.public_host,
    )


async def _report_microsoft365(m365: Microsoft365) -> None:
    """Say at start-up whether Microsoft 365 answers, and how the sync group will be written."""
    if m365.sync_group is None:
        log.warning("m365.no_sync_group", hint="set SYNCWARDEN_GRAPH__SYNC_GROUP_ID")
        return
    try:
        group = await m365.sync_group.group()
    except ConnectorError as error:
        log.warning("m365.unreachable", error=str(error))
        return
    log.info(
        "m365.connected",
        sync_group=group.display_name,
        kind=group.kind.value,
        write_path="graph" if group.kind.writable_through_graph else "exchange",
    )


OWN_CREDENTIAL_WARNING_DAYS = 14


async def _warn_about_own_credentials(workflows: Workflows) -> None:
    """Log loudly at start-up when Syncwarden's own secret or certificate is about to end."""
    try:
        findings = await workflows.credentials.expiring(
            within_days=OWN_CREDENTIAL_WARNING_DAYS, own_only=True
        )
    except ConnectorError as error:
        log.warning("credentials.own_check_failed", error=str(error))
        return
    for finding in findings:
        log.warning(
            "credentials.own_expiring",
            app=finding.app.display_name,
            app_id=finding.app.app_id,
            key_id=finding.credential.key_id,
            days_left=round(finding.days_left, 1),
            hint="rotate it now, or switch to a certificate or managed identity (see README)",
        )


async def _serve_http(
    settings: Settings,
    engine: AsyncEngine,
    dialogue: DialogueLogic,
    stop: asyncio.Event | None,
    subscriptions: MailboxSubscriptions | None,
    role: Role,
    *,
    background: BackgroundWork | None,
    scim: ScimEndpoint | None = None,
) -> None:
    """Listen, then start the background work: a process that cannot take its port (another
    one has it) ends before any job has begun, instead of cutting its first runs short."""
    stop_event = stop or asyncio.Event()
    app = create_app(
        settings,
        engine,
        dialogue,
        subscriptions,
        teams_endpoints=role is not Role.WORKER,
        scim=scim,
    )
    async with listening(settings, app) as listener:
        _install_signal_handlers(stop_event)
        if background is not None:
            await background.start()
        _freeze_start_up_objects()
        log.info(
            "syncwarden.started",
            version=__version__,
            role=role.value,
            background=background is not None,
            mode=settings.mode.value,
            url=f"http://{settings.http.host}:{listener.port}",
            anonymous_bot_auth=settings.anonymous_bot_auth,
        )
        try:
            await stop_event.wait()
        finally:
            log.info("syncwarden.stopping")


@dataclass(frozen=True)
class HttpListener:
    port: int
    limits: ConnectionLimits


@contextlib.asynccontextmanager
async def listening(
    settings: Settings, app: web.Application, *, port: int | None = None
) -> AsyncIterator[HttpListener]:
    """Serve ``app`` on ``settings.http`` (or ``port``; 0 picks a free one) for the block.

    Slow and idle clients are cut off: aiohttp's keep-alive timeout closes idle connections,
    :class:`GuardedRequestHandler` times each request head and caps the connections, and the
    body-limit middleware (``syncwarden.web``) times each body. On leaving, the listener stops
    accepting, idle connections close, and in-flight requests get
    ``http.shutdown_timeout_seconds`` to finish.
    """
    http = settings.http
    handler_args: dict[str, Any] = {
        "keepalive_timeout": http.keepalive_timeout_seconds,
        "access_log": None,
    }
    runner = web.AppRunner(app, shutdown_timeout=http.shutdown_timeout_seconds, **handler_args)
    await runner.setup()
    server = runner.server
    assert server is not None  # set by setup()
    limits = ConnectionLimits(http, app[METRICS])
    loop = asyncio.get_running_loop()

    def new_connection() -> GuardedRequestHandler:
        return GuardedRequestHandler(server, limits, loop=loop, **handler_args)

    try:
        listener = await loop.create_server(
            new_connection, http.host, http.port if port is None else port, backlog=_BACKLOG
        )
    except BaseException:
        await runner.cleanup()
        raise
    try:
        yield HttpListener(port=listener.sockets[0].getsockname()[1], limits=limits)
    finally:
        listener.close()  # stop accepting; connections already open are the runner's
        await runner.cleanup()


_BACKLOG = 128
_REFUSAL_BODY = b'{"error": "too many connections; try again shortly"}'
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: " + str(len(_REFUSAL_BODY)).encode() + b"\r\n\r\n" + _REFUSAL_BODY
)


class ConnectionLimits:
    """The connection cap and head timeout that every connection of one listener shares."""

    def __init__(self, http: HttpSettings, metrics: HttpMetrics) -> None:
        self.max_connections = http.max_connections
        self.header_timeout = http.header_timeout_seconds
        self.open = 0
        self._metrics = metrics

    def admit(self) -> bool:
        """Count a new connection in, or say it is one too many (and count the refusal)."""
        if self.open >= self.max_connections:
            self._metrics.refused_connections.inc()
            return False
        self.open += 1
        self._metrics.open_connections.set(self.open)
        return True

    def release(self) -> None:
        self.open -= 1
        self._metrics.open_connections.set(self.open)

    def head_timed_out(self) -> None:
        self._metrics.timeouts.labels(phase="head").inc()


class GuardedRequestHandler(web.RequestHandler):
    """aiohttp's connection handler, with a deadline for each request head and a connection cap.

    aiohttp has no header timeout: its keep-alive timer only closes a connection that waits
    idle, and a head trickled in one byte at a time keeps resetting nothing. Here the clock
    starts when the connection opens, and on a kept-alive connection at the first byte of the
    next request; the whole head (request line and headers) must be in before it runs out, or
    the connection is closed. A connection over the cap is answered 503 at once and closed,
    without a request being read.
    """

    def __init__(self, manager: web.Server, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = limits
        self._admitted = False
        self._head_clock: asyncio.TimerHandle | None = None
        # The body of the latest request whose head arrived; the next byte after it is complete
        # starts the next head.
        self._latest_body: StreamReader | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._limits.admit():
            log.warning("http.connection_refused", open=self._limits.open)
            cast(asyncio.Transport, transport).write(_REFUSAL)
            transport.close()  # after the refusal is sent
            return
        self._admitted = True
        super().connection_made(transport)
        self._start_head_clock()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self._limits.release()
        self._stop_head_clock()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if data and self._head_clock is None and self._between_requests():
            self._start_head_clock()
        heads = self._request_count
        super().data_received(data)
        if self._request_count != heads:  # one or more heads are complete
            self._stop_head_clock()
            self._latest_body = self._messages[-1][1] if self._messages else None

    def _between_requests(self) -> bool:
        return self._latest_body is None or self._latest_body.is_eof()

    def _start_head_clock(self) -> None:
        self._head_clock = self._loop.call_later(self._limits.header_timeout, self._head_too_slow)

    def _stop_head_clock(self) -> None:
        if self._head_clock is not None:
            self._head_clock.cancel()
            self._head_clock = None

    def _head_too_slow(self) -> None:
        self._head_clock = None
        if self.transport is None:
            return
        if self._request_in_progress or self._messages:
            # A pipelined head behind a request still being answered: time it from now.
            self._start_head_clock()
            return
        self._limits.head_timed_out()
        log.info("http.head_timeout", seconds=self._limits.header_timeout, peer=self.peername)
        self.force_close()


def _freeze_start_up_objects() -> None:
    """Keep what start-up built (modules, mappers, models, settings) out of later garbage
    collections: it lives as long as the process, yet every full collection walked all of it,
    a pause felt by whichever Teams turns were waiting (``gc.freeze``,
    https://docs.python.org/3/library/gc.html#gc.freeze). In the click benchmark at 50
    concurrent approvers this took about a tenth off the p99 and the CPU per click."""
    gc.collect()
    gc.freeze()


def _install_signal_handlers(stop_event: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Not available off Unix or outside the main thread; Ctrl-C still ends the process there.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop_event.set)
