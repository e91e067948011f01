"""Process start-up and shutdown for ``syncwarden serve``.

Start-up order matters: refuse a broken configuration before touching anything, then migrate,
then listen. Shutdown on SIGTERM/SIGINT stops accepting connections, lets in-flight requests finish
(up to ``http.shutdown_timeout_seconds``) and closes the database pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

from aiohttp import web

from core.db import create_engine
from core.errors import ConfigurationError
from core.logging import get_logger
from core.settings import Settings, find_problems
from syncwarden import __version__
from syncwarden.migrate import upgrade_to_head
from syncwarden.web import create_app

log = get_logger(__name__)


def ensure_startable(settings: Settings) -> None:
    problems = find_problems(settings)
    if problems:
        raise ConfigurationError(problems)


async def serve(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run the web process until ``stop`` is set or the process receives SIGTERM/SIGINT."""
    ensure_startable(settings)
    stop_event = stop or asyncio.Event()
    engine = create_engine(
        settings.database.url.get_secret_value(),
        echo=settings.database.echo,
        pool_size=settings.database.pool_size,
    )
    try:
        status = await upgrade_to_head(engine)
        log.info("database.migrated", schema=status.current)
        app = create_app(settings, engine)
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
    finally:
        await engine.dispose()
        log.info("syncwarden.stopped")


def _install_signal_handlers(stop_event: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Not available off Unix or outside the main thread; Ctrl-C still ends the process there.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop_event.set)
