"""Teams' per-conversation limits, checked with a clock that moves only when we wait."""

from __future__ import annotations

from syncwarden.bot.rate_limit import TEAMS_APP_WINDOWS, ConversationRateLimiter
from tests.support.monotonic import SleepingClock


async def sends(
    limiter: ConversationRateLimiter, clock: SleepingClock, count: int, conversation: str = "c1"
) -> list[float]:
    times = []
    for _ in range(count):
        await limiter.acquire(conversation)
        times.append(clock.now)
    return times


async def test_seven_per_second_then_eight_per_two_seconds() -> None:
    clock = SleepingClock()
    limiter = ConversationRateLimiter(clock=clock, sleep=clock.sleep)
    times = await sends(limiter, clock, 16)
    assert times[:7] == [1000.0] * 7, "seven go out at once"
    for i in range(len(times)):
        one_second = [t for t in times[: i + 1] if times[i] - t < 1.0]
        two_seconds = [t for t in times[: i + 1] if times[i] - t < 2.0]
        assert len(one_second) <= 7 and len(two_seconds) <= 8


async def test_sixty_per_thirty_seconds() -> None:
    clock = SleepingClock()
    limiter = ConversationRateLimiter(clock=clock, sleep=clock.sleep)
    times = await sends(limiter, clock, 61)
    assert times[60] - times[0] >= 30.0


async def test_conversations_are_independent() -> None:
    clock = SleepingClock()
    limiter = ConversationRateLimiter(clock=clock, sleep=clock.sleep)
    await sends(limiter, clock, 8, "c1")
    start = clock.now
    await sends(limiter, clock, 7, "c2")
    assert clock.now == start, "another conversation does not wait for c1"


async def test_take_leaves_a_long_wait_to_the_caller_and_counts_nothing() -> None:
    clock = SleepingClock()
    limiter = ConversationRateLimiter(clock=clock, sleep=clock.sleep)
    await sends(limiter, clock, 60)  # the 60-in-30-seconds window is now full
    wait = await limiter.take("c1", max_wait=1.0)
    assert 0 < wait <= 30.0
    assert limiter.wait_needed("c1") == wait, "nothing was counted"
    assert await limiter.take("c2", max_wait=1.0) == 0.0, "another conversation has room"


async def test_the_app_wide_window_allows_fifty_a_second_across_conversations() -> None:
    clock = SleepingClock()
    limiter = ConversationRateLimiter(TEAMS_APP_WINDOWS, clock=clock, sleep=clock.sleep)
    times = await sends(limiter, clock, 120, "app")
    assert times[:50] == [1000.0] * 50
    assert all(len([t for t in times if start <= t < start + 1.0]) <= 50 for start in times)
