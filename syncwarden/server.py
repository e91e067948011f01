"""Process start-up and shutdown for ``syncwarden serve``.

Start-up order matters: refuse a broken configuration before touching anything, then migrate,
then listen. Shutdown on SIGTERM/SIGINT stops accepting connections, lets in-flight requests finish
(up to ``http.shutdown_timeout_seconds``) and closes the database pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import httpx
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.dialogue import DialogueLogic
from connectors.errors import ConnectorError
from core.db import create_engine, session_factory
from core.errors import ConfigurationError
from core.logging import get_logger
from core.settings import Settings, find_problems
from sync.subscriptions import MailboxSubscriptions
from syncwarden import __version__
from syncwarden.background import BackgroundWork
from syncwarden.doctor import Doctor
from syncwarden.m365 import Microsoft365, build_microsoft365
from syncwarden.migrate import upgrade_to_head
from syncwarden.sandbox_process import settings_for_sandbox, start_sandbox
from syncwarden.web import create_app
from syncwarden.workflow_wiring import (
    BotTokens,
    Workflows,
    build_teams_delivery,
    build_workflows,
)

log = get_logger(__name__)


def ensure_startable(settings: Settings) -> None:
    problems = find_problems(settings)
    if problems:
        raise ConfigurationError(problems)


SANDBOX_STATE_DIR = Path("var/sandbox")


async def serve(
    settings: Settings, *, stop: asyncio.Event | None = None, with_sandbox: bool = False
) -> None:
    """Run the web process until ``stop`` is set or the process receives SIGTERM/SIGINT.

    With ``with_sandbox`` the sandbox tenant is started first, as a child process, and the
    Microsoft 365 settings are pointed at it.
    """
    ensure_startable(settings)
    if with_sandbox and settings.is_production:
        raise ConfigurationError(
            ["--sandbox starts the sandbox tenant, which production never uses"]
        )
    async with contextlib.AsyncExitStack() as stack:
        if with_sandbox:
            sandbox = await start_sandbox(SANDBOX_STATE_DIR)
            stack.push_async_callback(sandbox.stop)
            settings = settings_for_sandbox(settings, sandbox.ready)
            log.info("sandbox.started", base_url=sandbox.ready["base_url"])
        engine = create_engine(
            settings.database.url.get_secret_value(),
            echo=settings.database.echo,
            pool_size=settings.database.pool_size,
        )
        stack.push_async_callback(engine.dispose)
        status = await upgrade_to_head(engine)
        log.info("database.migrated", schema=status.current)
        sessions = session_factory(engine)
        teams_http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0))
        stack.push_async_callback(teams_http.aclose)
        dispatcher, conversations = build_teams_delivery(settings, sessions, teams_http)
        workflows = None
        m365 = build_microsoft365(settings) if settings.graph.client_id else None
        if m365 is not None:
            stack.push_async_callback(m365.aclose)
            await _report_microsoft365(m365)
            workflows = build_workflows(settings, sessions, m365, on_notification=dispatcher.wake)
            if workflows is not None:
                stack.push_async_callback(workflows.sync.aclose)
            if workflows is not None:
                await _warn_about_own_credentials(workflows)
        if workflows is not None and settings.scheduler.enabled:
            background = BackgroundWork(settings, workflows, dispatcher, engine=engine)
            await background.start()
            stack.push_async_callback(background.stop)
            workflows.sync.subscriptions.on_requested = lambda: background.kick("sync.requested")
        dialogue = DialogueLogic(
            conversations,
            workflows.service if workflows else None,
            workflows.roster if workflows else None,
            credentials=workflows.credentials if workflows else None,
            doctor=Doctor(settings, engine, sessions, m365, BotTokens(settings)),
            sync=workflows.sync.worker if workflows else None,
        )
        subscriptions = workflows.sync.subscriptions if workflows else None
        await _serve_http(settings, engine, dialogue, stop, subscriptions)
    log.info("syncwarden.stopped")


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
) -> None:
    stop_event = stop or asyncio.Event()
    app = create_app(settings, engine, dialogue, subscriptions)
    runner = web.AppRunner(
        app, shutdown_timeout=settings.http.shutdown_timeout_seconds, access_log=None
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.http.host, settings.http.port)
    await site.start()
    _install_signal_handlers(stop_event)
    log.info(
        "syncwarden.started",
        version=__version__,
        mode=settings.mode.value,
        url=f"http://{settings.http.host}:{settings.http.port}",
        anonymous_bot_auth=settings.anonymous_bot_auth,
    )
    try:
        await stop_event.wait()
    finally:
        log.info("syncwarden.stopping")
        await runner.cleanup()


def _install_signal_handlers(stop_event: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Not available off Unix or outside the main thread; Ctrl-C still ends the process there.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop_event.set)
