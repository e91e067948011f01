"""The connection pool serves turns in the order they asked, and loses no connection to a turn
that gave up waiting (core/fair_pool.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.util.concurrency import greenlet_spawn
from sqlalchemy.util.queue import Empty

from syncwarden.core.db import create_engine
from syncwarden.core.fair_pool import FairAsyncQueuePool, FairQueue


@pytest.fixture
async def one_connection(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine whose pool has a single connection and nothing beyond it."""
    engine = create_async_engine(
        database_url, poolclass=FairAsyncQueuePool, pool_size=1, max_overflow=0, pool_timeout=5
    )
    try:
        yield engine
    finally:
        await engine.dispose()


async def queued(queue: FairQueue[object], count: int) -> None:
    """Let the tasks just created run once: asking for a connection is synchronous up to the
    wait, so after one turn of the loop each of them waits in ``queue``."""
    await asyncio.sleep(0)
    assert len(queue._waiters) == count


def pool_queue(engine: AsyncEngine) -> FairQueue[object]:
    queue = engine.pool._pool  # type: ignore[attr-defined]
    assert isinstance(queue, FairQueue)
    return queue


async def test_the_service_engine_uses_the_fair_pool(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        assert isinstance(engine.pool, FairAsyncQueuePool)
    finally:
        await engine.dispose()


async def test_a_returned_connection_is_the_waiting_turns_not_a_newcomers() -> None:
    """The race SQLAlchemy's own queue loses: a connection comes back while a turn waits, and
    another turn asks in the same moment, before the waiting one has run. The newcomer must
    find nothing free and queue behind."""
    queue: FairQueue[str] = FairQueue(maxsize=1)
    waiter = asyncio.create_task(greenlet_spawn(queue.get, True, 5))
    await queued(queue, 1)  # type: ignore[arg-type]
    queue.put_nowait("connection")
    with pytest.raises(Empty):
        queue.get_nowait()  # the newcomer, in the same tick
    assert await waiter == "connection"


async def test_a_turn_that_gives_up_waiting_loses_no_connection(
    one_connection: AsyncEngine,
) -> None:
    async def turn() -> None:
        async with one_connection.connect():
            pass

    holder = await one_connection.connect()
    gave_up = asyncio.create_task(turn())
    await queued(pool_queue(one_connection), 1)
    await holder.close()  # handed to the waiting turn...
    gave_up.cancel()  # ...which is cancelled before it could take it
    with pytest.raises(asyncio.CancelledError):
        await gave_up
    async with asyncio.timeout(3), one_connection.connect() as connection:  # still there
        assert not connection.closed


async def test_without_overflow_a_burst_waits_for_the_pools_own_connections(
    database_url: str,
) -> None:
    """The service's default (``DATABASE__MAX_OVERFLOW=0``): under a burst no connection is
    opened beyond the pool; the extra work waits in line and gets a connection as one returns."""
    if not database_url.startswith("postgresql"):
        pytest.skip("the pool size and overflow settings are PostgreSQL's")
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    try:
        holder = await engine.connect()

        async def turn() -> None:
            async with engine.connect():
                pass

        burst = asyncio.create_task(turn())
        await queued(pool_queue(engine), 1)  # waiting, not connecting
        await holder.close()
        await burst
        assert isinstance(engine.pool, FairAsyncQueuePool) and engine.pool.checkedout() == 0
    finally:
        await engine.dispose()
