"""A connection pool that hands connections out in the order they were asked for.

SQLAlchemy's asyncio pool keeps its free connections in an ``asyncio.Queue`` and takes one
without waiting whenever one is there. When a connection comes back, the turn that has waited
longest is only woken; a turn arriving in between finds the connection and takes it, and the
woken turn goes back to the end of the line. Under a burst (fifty approvers at once on a pool
of thirteen) some turns lost that race again and again: the click benchmark's p99 at 50
clients was 3 to 4 times its median, and 7 to 8 times the echo bot's.

Here a returned connection goes straight to the longest waiter, and a free connection exists
only while nobody waits, so nobody can overtake. The pool is SQLAlchemy's own
``AsyncAdaptedQueuePool`` with this queue in place of its ``_queue_class`` (an attribute meant
for subclasses, though not documented); ``tests/integration/test_fair_pool.py`` pins the order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Generic, TypeVar

from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.util.concurrency import await_
from sqlalchemy.util.queue import AsyncAdaptedQueue, Empty, Full

T = TypeVar("T")


class FairQueue(AsyncAdaptedQueue[T], Generic[T]):
    """First come, first served: an item put while someone waits is theirs at once."""

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        super().__init__(maxsize, use_lifo)
        self._items: deque[T] = deque()
        self._waiters: deque[asyncio.Future[T]] = deque()

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self._items)

    def qsize(self) -> int:
        return len(self._items)

    def put_nowait(self, item: T) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # one that gave up (timed out, cancelled) is passed over
                waiter.set_result(item)
                return
        if self.full():
            raise Full()
        self._items.append(item)

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        """Never waits: the pool returns connections without blocking, and closes one that
        does not fit (``Full``)."""
        self.put_nowait(item)

    def get_nowait(self) -> T:
        if not self._items:
            raise Empty()
        return self._items.pop() if self.use_lifo else self._items.popleft()

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        if self._items or not block:
            return self.get_nowait()
        item: T = await_(self._wait(seconds=timeout))
        return item

    async def _wait(self, *, seconds: float | None) -> T:
        waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(seconds):
                return await waiter
        except BaseException as error:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            if waiter.done() and not waiter.cancelled():
                # Handed a connection just as this turn gave up: pass it on, never lose it.
                self.put_nowait(waiter.result())
            if isinstance(error, TimeoutError):
                raise Empty() from error
            raise


class FairAsyncQueuePool(AsyncAdaptedQueuePool):
    """SQLAlchemy's asyncio pool, waiting in line (see the module's docstring)."""

    _queue_class = FairQueue  # type: ignore[assignment]  # a QueueCommon of pool entries
