"""Directory reads answered from memory for a short while, for the request form and its checks.

A person asking for the form, changing their mind and submitting it looks up the same person
and mailbox again and again; a flood of such turns would otherwise be a flood of Graph calls.
This wraps any :class:`~connectors.ports.Directory` and keeps each successful answer of
``get_user``, ``find_user_by_address`` and ``has_mailbox`` for ``ttl_seconds``. Lookups of the
same key that arrive while one is under way share it, so a burst of identical turns costs one
call. Errors are never kept: the next lookup asks again (lookups waiting on the failed one when
it failed share its error).

Only for readers that can live with an answer up to ``ttl_seconds`` old: the request form and the
validation of a request (provisioning re-reads the person before acting). Group membership is
not cached here: ``members`` goes straight through, because the roster keeps its own cache of
approvers and IT admins, and provisioning and sync must see membership as it is now.

The cache is per process and bounded: at most ``max_entries`` answers per kind of lookup, the
least recently used dropped first.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from syncwarden.connectors.ports import Directory, DirectoryUser, GroupMember

T = TypeVar("T")
# Longer keys are kept as their SHA-256, so the bound holds in bytes too.
LONGEST_KEY = 128


@dataclass(frozen=True)
class _Entry(Generic[T]):
    value: T
    expires: float


class _ReadThrough(Generic[T]):
    """One kind of lookup: kept answers by key, and the lookups under way."""

    def __init__(self, ttl: float, max_entries: int, clock: Callable[[], float]) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, _Entry[T]] = OrderedDict()
        self._pending: dict[str, asyncio.Task[T]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str, load: Callable[[], Coroutine[Any, Any, T]]) -> T:
        if self._ttl <= 0:
            return await load()
        if len(key) > LONGEST_KEY:
            key = "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        entry = self._entries.get(key)
        if entry is not None:
            if self._clock() < entry.expires:
                self._entries.move_to_end(key)
                return entry.value
            del self._entries[key]
        task = self._pending.get(key)
        if task is None:
            task = asyncio.create_task(load())
            self._pending[key] = task
            task.add_done_callback(lambda done: self._settle(key, done))
        # A waiter that gives up (its turn was cancelled) must not cancel the others' lookup.
        return await asyncio.shield(task)

    def _settle(self, key: str, task: asyncio.Task[T]) -> None:
        if self._pending.get(key) is task:
            del self._pending[key]
        if task.cancelled() or task.exception() is not None:
            return  # never kept; retrieving the exception also spares an orphan's warning
        self._entries[key] = _Entry(task.result(), self._clock() + self._ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)


class CachedDirectory:
    """A :class:`~connectors.ports.Directory` whose person and mailbox reads are kept briefly."""

    def __init__(
        self,
        inner: Directory,
        *,
        ttl_seconds: float = 60.0,
        max_entries: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._users = _ReadThrough[DirectoryUser](ttl_seconds, max_entries, clock)
        self._addresses = _ReadThrough[DirectoryUser | None](ttl_seconds, max_entries, clock)
        self._mailboxes = _ReadThrough[bool](ttl_seconds, max_entries, clock)

    @property
    def size(self) -> int:
        """Answers kept now, all kinds together."""
        return len(self._users) + len(self._addresses) + len(self._mailboxes)

    async def get_user(self, id_or_upn: str) -> DirectoryUser:
        # Object ids and UPNs are case-insensitive in Entra ID.
        return await self._users.get(
            id_or_upn.strip().lower(), lambda: self._inner.get_user(id_or_upn)
        )

    async def find_user_by_address(self, address: str) -> DirectoryUser | None:
        """Nobody at an address (None) is an answer and is kept like any other."""
        return await self._addresses.get(
            address.strip().lower(), lambda: self._inner.find_user_by_address(address)
        )

    async def has_mailbox(self, user_id: str) -> bool:
        return await self._mailboxes.get(
            user_id.strip().lower(), lambda: self._inner.has_mailbox(user_id)
        )

    async def members(self, group_id: str, *, transitive: bool = False) -> list[GroupMember]:
        """Always asked (see the module): membership read stale would grant or refuse wrongly."""
        return await self._inner.members(group_id, transitive=transitive)
