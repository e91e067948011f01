"""Slow and idle clients are cut off, and connections are capped (issue 12, item 7).

Each test serves the app the way ``syncwarden serve`` does (``syncwarden.server.listening``) and
talks raw HTTP/1.1 over a socket, so a head or body can be trickled a byte at a time. Timeouts
are half a second here; each test sets the other timeouts long, so what closes the connection is
the one under test. The waits are for the server's end of the connection (EOF), bounded by a
generous timeout, never a fixed sleep; the trickles themselves are the only sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from syncwarden.core.settings import Settings
from syncwarden.server import HttpListener, listening
from syncwarden.web import create_app

SHORT = 0.5
LONG = 60.0
# A connection still open this long after its timeout was not closed by it.
GRACE = 5.0


def settings_with(**http: Any) -> Settings:
    limits = {
        "header_timeout_seconds": LONG,
        "body_timeout_seconds": LONG,
        "keepalive_timeout_seconds": LONG,
        **http,
    }
    return Settings.model_validate({"mode": "sandbox", "http": limits})


@contextlib.asynccontextmanager
async def serving(settings: Settings, engine: AsyncEngine) -> AsyncIterator[HttpListener]:
    async with listening(settings, create_app(settings, engine), port=0) as listener:
        yield listener


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def connect(listener: HttpListener) -> Connection:
    return await asyncio.open_connection("127.0.0.1", listener.port)


async def read_until_closed(reader: asyncio.StreamReader, *, within: float) -> bytes:
    """Everything the server sends until it closes the connection (fails if it does not)."""
    received = b""
    async with asyncio.timeout(within):
        try:
            while chunk := await reader.read(65536):
                received += chunk
        except ConnectionResetError:
            # Closed with bytes of ours still unread on its side, the server's kernel resets the
            # connection; a reset is a close too, and it may drop what arrived just before it.
            pass
    return received


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One response (status, body) from a kept-alive connection."""
    async with asyncio.timeout(GRACE):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        length = next(
            int(line.split(":", 1)[1])
            for line in lines
            if line.lower().startswith("content-length:")
        )
        return int(lines[0].split()[1]), await reader.readexactly(length)


async def trickle(writer: asyncio.StreamWriter, byte: bytes, every: float) -> None:
    """Send ``byte`` every ``every`` seconds until the connection breaks (or we are cancelled)."""
    with contextlib.suppress(ConnectionError):
        while not writer.is_closing():
            writer.write(byte)
            await writer.drain()
            await asyncio.sleep(every)


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def metrics_text(listener: HttpListener) -> str:
    reader, writer = await connect(listener)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    await writer.drain()
    response = await read_until_closed(reader, within=GRACE)
    await close(writer)
    return response.decode()


async def trickled(listener: HttpListener, opening: bytes, byte: bytes) -> tuple[bytes, float]:
    """Send ``opening``, then ``byte`` every 0.1 s; what came back before the server closed the
    connection, and how long after the opening that took."""
    reader, writer = await connect(listener)
    writer.write(opening)
    started = time.monotonic()
    sender = asyncio.create_task(trickle(writer, byte, every=0.1))
    try:
        answer = await read_until_closed(reader, within=SHORT + GRACE)
    finally:
        sender.cancel()
        await close(writer)
    return answer, time.monotonic() - started


async def test_a_head_trickled_a_byte_at_a_time_is_cut_off(migrated_engine: AsyncEngine) -> None:
    """Every byte resets nothing: the whole head must arrive within the header timeout."""
    async with serving(settings_with(header_timeout_seconds=SHORT), migrated_engine) as listener:
        answer, elapsed = await trickled(
            listener, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ", b"a"
        )
        assert answer == b""  # no request was read, so nothing is answered
        assert SHORT * 0.8 <= elapsed < SHORT + GRACE
        assert 'syncwarden_http_timeouts_total{phase="head"} 1.0' in await metrics_text(listener)


async def test_a_connection_that_never_sends_a_request_is_closed(
    migrated_engine: AsyncEngine,
) -> None:
    async with serving(settings_with(header_timeout_seconds=SHORT), migrated_engine) as listener:
        reader, writer = await connect(listener)
        try:
            assert await read_until_closed(reader, within=SHORT + GRACE) == b""
        finally:
            await close(writer)


async def test_a_prompt_head_is_served_and_the_next_head_gets_its_own_clock(
    migrated_engine: AsyncEngine,
) -> None:
    """The header timeout does not end a kept-alive connection between requests."""
    settings = settings_with(header_timeout_seconds=SHORT)
    async with serving(settings, migrated_engine) as listener:
        reader, writer = await connect(listener)
        try:
            for _ in range(2):
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                await writer.drain()
                status, _ = await read_response(reader)
                assert status == 200
            # Idle for longer than the header timeout: the keep-alive timeout (long) governs.
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(SHORT * 2):
                    await reader.read(1)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            await writer.drain()
            assert (await read_response(reader))[0] == 200
        finally:
            await close(writer)


async def test_a_body_trickled_a_byte_at_a_time_is_answered_408_and_closed(
    migrated_engine: AsyncEngine,
) -> None:
    async with serving(settings_with(body_timeout_seconds=SHORT), migrated_engine) as listener:
        answer, elapsed = await trickled(
            listener,
            b"POST /api/messages HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{",
            b" ",
        )
        # The server closes with trickled bytes unread, so the connection may end in a reset
        # that drops the answer on our side before we read it (seen under CI load); what was
        # answered is then known from the server's metrics below.
        if answer:
            assert answer.startswith(b"HTTP/1.1 408 ")
            assert b"did not arrive within 0.5 seconds" in answer
            assert b"x-request-id" in answer.lower()
        # Closed right after the answer, not after aiohttp's lingering read of the rest.
        assert SHORT * 0.8 <= elapsed < SHORT + 3
        metrics = await metrics_text(listener)
        assert 'syncwarden_http_timeouts_total{phase="body"} 1.0' in metrics
        assert (
            'syncwarden_http_requests_total{method="POST",route="/api/messages",status="408"} 1.0'
            in metrics
        )


async def test_a_chunked_body_that_stalls_is_answered_408(migrated_engine: AsyncEngine) -> None:
    async with serving(settings_with(body_timeout_seconds=SHORT), migrated_engine) as listener:
        reader, writer = await connect(listener)
        writer.write(
            b"POST /api/graph/notifications HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\n"
        )
        await writer.drain()
        try:
            answer = await read_until_closed(reader, within=SHORT + GRACE)
        finally:
            await close(writer)
        assert answer.startswith(b"HTTP/1.1 408 ")


async def test_an_idle_kept_alive_connection_is_closed(migrated_engine: AsyncEngine) -> None:
    settings = settings_with(keepalive_timeout_seconds=SHORT)
    async with serving(settings, migrated_engine) as listener:
        reader, writer = await connect(listener)
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            await writer.drain()
            status, _ = await read_response(reader)
            answered = time.monotonic()
            assert status == 200
            assert await read_until_closed(reader, within=SHORT + GRACE) == b""
        finally:
            await close(writer)
        assert time.monotonic() - answered >= SHORT * 0.8


async def test_connections_beyond_the_cap_are_answered_503_and_closed(
    migrated_engine: AsyncEngine,
) -> None:
    async with serving(settings_with(max_connections=2), migrated_engine) as listener:
        held = [await connect(listener) for _ in range(2)]
        for reader, writer in held:  # both are served and stay open
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            await writer.drain()
            assert (await read_response(reader))[0] == 200
        assert listener.limits.open == 2

        reader, writer = await connect(listener)
        try:
            refused = await read_until_closed(reader, within=GRACE)
        finally:
            await close(writer)
        assert refused.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b"Retry-After: 1" in refused and b"too many connections" in refused
        assert listener.limits.open == 2

        # A slot freed is a slot to use: the next connection is served. (The server releases
        # the slot before its socket closes, so once this client sees the end, it is free.)
        reader, writer = held[0]
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert (await read_until_closed(reader, within=GRACE)).startswith(b"HTTP/1.1 200 ")
        await close(writer)
        assert listener.limits.open == 1
        metrics = await metrics_text(listener)
        assert metrics.startswith("HTTP/1.1 200 ")
        assert "syncwarden_http_connections_refused_total 1.0" in metrics
        await close(held[1][1])
