"""Exceptions nobody awaited: counted by the loop's handler, bar asyncpg's abandoned connect."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import ssl
from collections.abc import Callable

import pytest
from asyncpg.connect_utils import TLSUpgradeProto

from syncwarden.core.failures import unexpected_counts
from syncwarden.core.logging import configure_logging
from syncwarden.core.loop_errors import WHERE, report_loop_errors
from syncwarden.core.settings import Mode, Settings


@pytest.fixture
def output() -> io.StringIO:
    stream = io.StringIO()
    configure_logging(Settings.model_validate({"mode": Mode.PRODUCTION}), stream=stream)
    return stream


def lines(output: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.getvalue().splitlines() if line.strip()]


def leave_unretrieved(make: Callable[[asyncio.AbstractEventLoop], None]) -> None:
    """Run ``make`` on a fresh loop with the service's handler, then collect what it dropped."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        report_loop_errors(loop)
        make(loop)
        gc.collect()  # the dropped future's __del__ hands its exception to the loop

    asyncio.run(main())


def test_an_exception_nobody_retrieved_is_logged_with_its_trace_and_counted(
    output: io.StringIO,
) -> None:
    before = unexpected_counts().get(WHERE, 0)

    def drop_a_failed_future(loop: asyncio.AbstractEventLoop) -> None:
        future: asyncio.Future[None] = loop.create_future()
        try:
            raise KeyError("ticket SW-1")
        except KeyError as error:
            future.set_exception(error)

    leave_unretrieved(drop_a_failed_future)

    assert unexpected_counts().get(WHERE, 0) == before + 1
    [line] = [line for line in lines(output) if line["event"] == "asyncio.unhandled"]
    assert line["level"] == "error" and line["error_type"] == "KeyError"
    assert "Future exception was never retrieved" in str(line["message"])
    assert "raise KeyError" in str(line["exception"]), "the stack trace is in the line"


def test_asyncpg_abandoned_tls_probe_is_noted_not_counted(output: io.StringIO) -> None:
    """The future asyncpg's TLS probe leaves when its socket closes before the server answered
    (a connect cancelled inside ``create_connection``): made by asyncpg's own protocol class."""
    before = unexpected_counts().get(WHERE, 0)

    def abandon_a_connect(loop: asyncio.AbstractEventLoop) -> None:
        probe = TLSUpgradeProto(loop, "db.example.edu", 5432, ssl.create_default_context(), False)
        probe.connection_lost(None)

    leave_unretrieved(abandon_a_connect)

    assert unexpected_counts().get(WHERE, 0) == before
    events = [(line["event"], line["level"]) for line in lines(output)]
    assert events == [("database.connect_abandoned", "info")]


def test_a_connection_error_of_another_kind_still_counts(output: io.StringIO) -> None:
    before = unexpected_counts().get(WHERE, 0)

    def drop_a_refused_connect(loop: asyncio.AbstractEventLoop) -> None:
        loop.create_future().set_exception(ConnectionError("connection refused"))

    leave_unretrieved(drop_a_refused_connect)

    assert unexpected_counts().get(WHERE, 0) == before + 1
