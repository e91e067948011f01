"""The read-through directory cache: kept answers, shared lookups, never an error, bounded."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncwarden.connectors.cached_directory import CachedDirectory
from syncwarden.connectors.errors import NotFoundError, TransientError
from syncwarden.connectors.ports import Directory, DirectoryUser, GroupMember


def user(key: str) -> DirectoryUser:
    return DirectoryUser(key, key.title(), f"{key}@example.edu", f"{key}@example.edu", True)


class CountingDirectory:
    """Counts the calls; ``entered`` is set when a lookup reaches it, ``gate`` holds lookups
    until a test opens it (the waiting tasks, created first, are all waiting by then)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.failures: list[Exception] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()

    async def _answer(self, kind: str) -> None:
        self.calls[kind] += 1
        self.entered.set()
        await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)

    async def get_user(self, id_or_upn: str) -> DirectoryUser:
        await self._answer("get_user")
        return user(id_or_upn.split("@")[0].lower())

    async def find_user_by_address(self, address: str) -> DirectoryUser | None:
        await self._answer("find_user_by_address")
        return None if address.startswith("nobody") else user(address.split("@")[0].lower())

    async def members(self, group_id: str, *, transitive: bool = False) -> list[GroupMember]:
        await self._answer("members")
        return [GroupMember("m1")]

    async def has_mailbox(self, user_id: str) -> bool:
        await self._answer("has_mailbox")
        return user_id != "harper"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def cached(ttl: float = 60.0, **options: int) -> tuple[CachedDirectory, CountingDirectory, Clock]:
    inner, clock = CountingDirectory(), Clock()
    return CachedDirectory(inner, ttl_seconds=ttl, clock=clock, **options), inner, clock


def test_it_is_a_directory() -> None:
    directory: Directory = cached()[0]
    assert directory is not None


async def test_answers_are_kept_for_the_ttl_then_asked_again() -> None:
    directory, inner, clock = cached(ttl=60)
    for _ in range(3):
        assert (await directory.get_user("sasha")).id == "sasha"
        assert await directory.has_mailbox("sasha")
        assert await directory.find_user_by_address("rowan@example.edu") is not None
    assert inner.calls == {"get_user": 1, "has_mailbox": 1, "find_user_by_address": 1}
    clock.now += 59.9
    await directory.get_user("sasha")
    assert inner.calls["get_user"] == 1
    clock.now += 0.1
    await directory.get_user("sasha")
    assert inner.calls["get_user"] == 2


async def test_keys_ignore_case_and_padding_and_kinds_are_apart() -> None:
    directory, inner, _ = cached()
    await directory.get_user("Sasha@Example.edu")
    await directory.get_user(" sasha@example.edu ")
    await directory.find_user_by_address("sasha@example.edu")
    assert inner.calls == {"get_user": 1, "find_user_by_address": 1}


async def test_negative_answers_are_answers() -> None:
    directory, inner, _ = cached()
    assert await directory.find_user_by_address("nobody@example.edu") is None
    assert await directory.find_user_by_address("nobody@example.edu") is None
    assert not await directory.has_mailbox("harper")
    assert not await directory.has_mailbox("harper")
    assert inner.calls == {"find_user_by_address": 1, "has_mailbox": 1}


@pytest.mark.parametrize("error", [NotFoundError("gone", status=404), TransientError("503")])
async def test_errors_are_never_kept(error: Exception) -> None:
    directory, inner, _ = cached()
    inner.failures.append(error)
    with pytest.raises(type(error)):
        await directory.get_user("sasha")
    assert (await directory.get_user("sasha")).id == "sasha"
    assert inner.calls["get_user"] == 2


async def test_lookups_under_way_are_shared() -> None:
    directory, inner, _ = cached()
    inner.gate.clear()
    waiting = [asyncio.create_task(directory.get_user("sasha")) for _ in range(50)]
    await inner.entered.wait()
    assert inner.calls["get_user"] == 1
    inner.gate.set()
    answers = await asyncio.gather(*waiting)
    assert {answer.id for answer in answers} == {"sasha"}
    assert inner.calls["get_user"] == 1


async def test_a_shared_failure_reaches_every_waiter_and_is_not_kept() -> None:
    directory, inner, _ = cached()
    inner.gate.clear()
    inner.failures.append(TransientError("503"))
    waiting = [asyncio.create_task(directory.has_mailbox("sasha")) for _ in range(5)]
    await inner.entered.wait()
    inner.gate.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(result, TransientError) for result in results)
    assert await directory.has_mailbox("sasha")
    assert inner.calls["has_mailbox"] == 2


async def test_a_waiter_that_gives_up_does_not_cancel_the_others() -> None:
    directory, inner, _ = cached()
    inner.gate.clear()
    impatient = asyncio.create_task(directory.get_user("sasha"))
    patient = asyncio.create_task(directory.get_user("sasha"))
    await inner.entered.wait()
    impatient.cancel()
    inner.gate.set()
    assert (await patient).id == "sasha"
    assert impatient.cancelled()
    await directory.get_user("sasha")
    assert inner.calls["get_user"] == 1, "the shared answer was kept"


async def test_membership_is_never_cached() -> None:
    directory, inner, _ = cached()
    for _ in range(3):
        assert await directory.members("g1", transitive=True) == [GroupMember("m1")]
    assert inner.calls["members"] == 3


async def test_a_ttl_of_zero_asks_every_time() -> None:
    directory, inner, _ = cached(ttl=0)
    for _ in range(3):
        await directory.get_user("sasha")
    assert inner.calls["get_user"] == 3
    assert directory.size == 0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from([f"p{n}" for n in range(40)]), max_size=200), st.integers(1, 10))
async def test_the_least_recently_used_go_beyond_the_bound(keys: list[str], bound: int) -> None:
    directory, inner, _ = cached(max_entries=bound)
    recent: list[str] = []
    for key in keys:
        expected_hit = key in recent
        before = inner.calls["get_user"]
        await directory.get_user(key)
        assert (inner.calls["get_user"] == before) is expected_hit
        recent = [k for k in recent if k != key] + [key]
        recent = recent[-bound:]
        assert directory.size <= bound


async def test_long_keys_are_kept_short_and_still_apart() -> None:
    directory, inner, _ = cached()
    long_address = "a" * 100_000 + "@example.edu"
    for _ in range(2):
        await directory.find_user_by_address(long_address)
        await directory.find_user_by_address("b" + long_address)
    assert inner.calls["find_user_by_address"] == 2
