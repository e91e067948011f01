"""Teams' send limits, kept on our side so we rarely meet a 429.

Teams allows a bot, per conversation, 7 messages a second, 8 in 2 seconds, 60 in 30 seconds and
1,800 an hour, and an app 50 requests a second per tenant across all its conversations
(learn.microsoft.com/microsoftteams/platform/bots/how-to/rate-limit). Windows are sliding, kept
as the times of recent sends. A send either waits for room (:meth:`acquire`, for waits of a
second at most) or asks whether there is room now (:meth:`reserve`), so that a caller facing a
long wait can put the work aside instead of holding on to it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

TEAMS_WINDOWS: tuple[tuple[int, float], ...] = ((7, 1.0), (8, 2.0), (60, 30.0), (1800, 3600.0))
TEAMS_APP_WINDOWS: tuple[tuple[int, float], ...] = ((50, 1.0),)

Sleep = Callable[[float], Awaitable[None]]


class ConversationRateLimiter:
    def __init__(
        self,
        windows: tuple[tuple[int, float], ...] = TEAMS_WINDOWS,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._windows = windows
        self._longest = max(seconds for _, seconds in windows)
        self._clock = clock
        self._sleep = sleep
        self._sent: dict[str, deque[float]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def wait_needed(self, conversation_id: str) -> float:
        """Seconds until one more send to this conversation fits every window (0 = now)."""
        now = self._clock()
        sent = self._sent.get(conversation_id)
        if not sent:
            return 0.0
        while sent and now - sent[0] >= self._longest:
            sent.popleft()
        wait = 0.0
        for limit, seconds in self._windows:
            recent = [t for t in sent if now - t < seconds]
            if len(recent) >= limit:
                wait = max(wait, recent[-limit] + seconds - now)
        return wait

    def reserve(self, conversation_id: str) -> float:
        """Count one send now if every window has room and return 0; otherwise count nothing
        and return the seconds until there is room."""
        wait = self.wait_needed(conversation_id)
        if wait <= 0:
            self._sent.setdefault(conversation_id, deque()).append(self._clock())
        return wait

    async def take(self, conversation_id: str, *, max_wait: float = math.inf) -> float:
        """Count one send, waiting for room as long as each wait is at most ``max_wait``;
        returns 0 once counted, or (counting nothing) the longer wait that was not taken."""
        lock = self._locks.setdefault(conversation_id, asyncio.Lock())
        async with lock:
            while (wait := self.reserve(conversation_id)) > 0:
                if wait > max_wait:
                    return wait
                await self._sleep(wait)
            return 0.0

    async def acquire(self, conversation_id: str) -> None:
        """Wait for room, then count this send."""
        await self.take(conversation_id)
