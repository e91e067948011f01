"""Retry decisions and the per-mailbox concurrency limit."""

from __future__ import annotations

import asyncio
import random

import pytest

from syncwarden.connectors import errors
from syncwarden.connectors.limits import ConcurrencyLimiter
from syncwarden.connectors.retry import RetryPolicy, call_with_retries


def throttled(retry_after: float | None = None) -> errors.ThrottledError:
    return errors.ThrottledError("slow down", status=429, retry_after=retry_after)


def test_throttling_is_retried_even_for_non_idempotent_requests() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.should_retry(throttled(), 1, idempotent=False)
    assert not policy.should_retry(throttled(), 3, idempotent=False)


def test_timeouts_and_5xx_repeat_only_idempotent_requests() -> None:
    policy = RetryPolicy()
    timeout = errors.TransientError("timeout")
    unavailable = errors.TransientError("busy", status=503)
    assert policy.should_retry(timeout, 1, idempotent=True)
    assert not policy.should_retry(timeout, 1, idempotent=False)
    assert not policy.should_retry(unavailable, 1, idempotent=False)


@pytest.mark.parametrize(
    "error",
    [
        errors.NotFoundError("x", status=404),
        errors.AccessDeniedError("x", status=403),
        errors.BadRequestError("x", status=400),
        errors.CredentialError("x"),
    ],
)
def test_permanent_errors_are_never_retried(error: errors.ConnectorError) -> None:
    assert not RetryPolicy().should_retry(error, 1, idempotent=True)


def test_retry_after_wins_over_backoff() -> None:
    assert RetryPolicy().delay(throttled(retry_after=0.75), 4) == 0.75


def test_backoff_grows_exponentially_with_full_jitter_and_a_cap() -> None:
    policy = RetryPolicy(base_delay_seconds=0.5, max_delay_seconds=4.0, rng=random.Random(7))
    error = errors.TransientError("x", status=503)
    for attempt, bound in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
        samples = [policy.delay(error, attempt) for _ in range(200)]
        assert all(0 <= sample <= bound for sample in samples)
        assert max(samples) > bound * 0.8  # jitter spreads over the whole range


async def test_call_with_retries_waits_as_told_then_succeeds() -> None:
    waits: list[float] = []
    outcomes: list[Exception | str] = [throttled(1.5), errors.TransientError("x", status=503), "ok"]

    async def send() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def record(seconds: float) -> None:
        waits.append(seconds)

    policy = RetryPolicy(rng=random.Random(1))
    assert await call_with_retries(send, policy=policy, idempotent=True, sleep=record) == "ok"
    assert waits[0] == 1.5
    assert len(waits) == 2


async def test_call_with_retries_refreshes_the_token_once_on_401() -> None:
    invalidated: list[bool] = []
    calls = 0

    async def send() -> str:
        nonlocal calls
        calls += 1
        raise errors.AuthenticationError("expired", status=401)

    with pytest.raises(errors.AuthenticationError):
        await call_with_retries(
            send,
            policy=RetryPolicy(),
            idempotent=True,
            on_unauthorized=lambda: invalidated.append(True),
        )
    assert calls == 2
    assert invalidated == [True]


async def test_no_more_than_the_mailbox_limit_run_at_once() -> None:
    limiter = ConcurrencyLimiter(global_limit=50, per_mailbox=4)
    in_flight = {"a": 0, "b": 0}
    peak = {"a": 0, "b": 0}
    gate = asyncio.Event()
    entered = asyncio.Queue[str]()

    async def work(mailbox: str) -> None:
        async with limiter.slot(mailbox.upper() if mailbox == "b" else mailbox):
            in_flight[mailbox] += 1
            peak[mailbox] = max(peak[mailbox], in_flight[mailbox])
            await entered.put(mailbox)
            await gate.wait()
            in_flight[mailbox] -= 1

    tasks = [asyncio.create_task(work(m)) for m in ["a"] * 10 + ["b"] * 10]
    for _ in range(8):  # exactly four per mailbox get in while the gate is closed
        await entered.get()
    assert entered.empty()
    assert in_flight == {"a": 4, "b": 4}
    gate.set()
    await asyncio.gather(*tasks)
    assert peak == {"a": 4, "b": 4}


async def test_a_batch_holds_every_slot_of_its_mailbox() -> None:
    """Graph runs up to four of a batch's requests against the mailbox, so while our batch is in
    flight no other request of ours may be: it waits for those inside and keeps out later ones."""
    limiter = ConcurrencyLimiter(global_limit=50, per_mailbox=4)
    inside: set[str] = set()
    seen_by: dict[str, set[str]] = {}
    entered = asyncio.Queue[str]()
    release_early = asyncio.Event()

    async def single(name: str, gate: asyncio.Event) -> None:
        async with limiter.slot("a"):
            seen_by[name] = set(inside)
            inside.add(name)
            await entered.put(name)
            await gate.wait()
            inside.discard(name)

    async def batch() -> None:
        async with limiter.slot("A", exclusive=True):
            seen_by["batch"] = set(inside)
            inside.add("batch")
            await entered.put("batch")
            inside.discard("batch")

    early = [asyncio.create_task(single(f"early-{n}", release_early)) for n in range(2)]
    assert {await entered.get(), await entered.get()} == {"early-0", "early-1"}
    in_batch = asyncio.create_task(batch())
    open_gate = asyncio.Event()
    open_gate.set()
    late = asyncio.create_task(single("late", open_gate))
    release_early.set()
    assert await entered.get() == "batch"
    assert await entered.get() == "late"
    assert seen_by["batch"] == set(), "the batch waited for the requests already in flight"
    assert "batch" not in seen_by["late"], "a later request waited for the batch"
    await asyncio.gather(*early, in_batch, late)


async def test_global_cap_applies_across_mailboxes() -> None:
    limiter = ConcurrencyLimiter(global_limit=3)
    gate = asyncio.Event()
    entered = asyncio.Queue[int]()

    async def work(index: int) -> None:
        async with limiter.slot(f"mailbox-{index}"):
            await entered.put(index)
            await gate.wait()

    tasks = [asyncio.create_task(work(i)) for i in range(6)]
    for _ in range(3):
        await entered.get()
    assert entered.qsize() == 0
    gate.set()
    await asyncio.gather(*tasks)
    assert entered.qsize() == 3


def test_mailbox_limit_above_four_is_refused() -> None:
    with pytest.raises(ValueError, match=r"1\.\.4"):
        ConcurrencyLimiter(global_limit=10, per_mailbox=5)
