"""Errors that reach the event loop itself: counted like every other unexpected exception.

An exception can end up where no ``try`` of ours sees it: in a task nobody awaits, or in a
future whose result nobody reads. asyncio then hands it to the loop's exception handler, whose
default logs "Future exception was never retrieved" on the ``asyncio`` logger and counts nothing.
The service installs :func:`handle_loop_exception` instead, so such an exception is logged with
its trace and counted in ``syncwarden_unexpected_errors_total{where="event_loop"}``.

One case is known and harmless: asyncpg opens a PostgreSQL connection by first asking whether
the server speaks TLS, with a future that the server's one-byte answer fills. When the connect
is cancelled (a shutdown, a request that timed out) after the socket is open but before
``create_connection`` returns, asyncio closes the socket, and asyncpg's protocol then sets
``ConnectionError('unexpected connection_lost() call')`` on a future that nobody will ever await
(``TLSUpgradeProto.connection_lost`` in asyncpg's ``connect_utils.py``; the same family as
https://github.com/MagicStack/asyncpg/issues/1211). Nothing was lost: the connect was abandoned
on purpose. It is logged at info and not counted, so that it neither pages anyone nor hides a
real error in the count.
"""

from __future__ import annotations

import asyncio
from typing import Any

from syncwarden.core.failures import report_unexpected
from syncwarden.core.logging import get_logger

log = get_logger(__name__)

WHERE = "event_loop"
# What asyncpg's TLS probe sets when its socket closes before the server answered.
_ABANDONED_CONNECT_MESSAGE = "unexpected connection_lost() call"


def handle_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Log and count an exception nobody handled; leave the loop's other notices to asyncio."""
    error = context.get("exception")
    if not isinstance(error, BaseException):
        # A notice without an exception (an unclosed transport, a slow callback in debug mode):
        # asyncio's own wording says it best.
        loop.default_exception_handler(context)
        return
    if is_abandoned_database_connect(error):
        log.info(
            "database.connect_abandoned",
            reason="a PostgreSQL connect was cancelled while asking the server about TLS",
        )
        return
    report_unexpected(log, "asyncio.unhandled", error, where=WHERE, message=context.get("message"))


def is_abandoned_database_connect(error: BaseException) -> bool:
    """Whether ``error`` is the one asyncpg leaves behind when a connect is cancelled early.

    Only an unretrieved future can carry it: had the connect still been waiting, the error would
    have been raised to it.
    """
    return type(error) is ConnectionError and str(error) == _ABANDONED_CONNECT_MESSAGE


def report_loop_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Install :func:`handle_loop_exception` on ``loop`` for the rest of its life.

    Not just for the service's run: a future dropped while the service stops is collected after
    ``serve`` has returned, and its exception must not slip past the count then.
    """
    loop.set_exception_handler(handle_loop_exception)
