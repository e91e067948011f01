"""A monotonic clock for rate limiters that moves only when the code under test waits."""

from __future__ import annotations


class SleepingClock:
    """Call it for the time; ``sleep`` records the wait and moves the time on by it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
