"""Concurrency limits for outgoing Microsoft 365 requests.

Exchange allows an app at most 4 concurrent requests per mailbox and answers the fifth with 429,
so we never send it: every request that targets a mailbox first takes that mailbox's slot, and
every request takes a slot of the app-wide cap. Mailbox keys should be the user's object id (the
same mailbox named by id and by UPN would get two separate slots).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

OUTLOOK_MAILBOX_CONCURRENCY = 4


class ConcurrencyLimiter:
    def __init__(
        self, *, global_limit: int, per_mailbox: int = OUTLOOK_MAILBOX_CONCURRENCY
    ) -> None:
        if not 1 <= per_mailbox <= OUTLOOK_MAILBOX_CONCURRENCY:
            raise ValueError(f"per-mailbox concurrency must be 1..{OUTLOOK_MAILBOX_CONCURRENCY}")
        self._global = asyncio.Semaphore(global_limit)
        self._per_mailbox = per_mailbox
        self._mailboxes: dict[str, _Mailbox] = {}

    @asynccontextmanager
    async def slot(self, mailbox: str | None, *, exclusive: bool = False) -> AsyncIterator[None]:
        """Hold one request slot (and the mailbox's, when the request targets one).

        ``exclusive`` holds every one of the mailbox's slots: a ``$batch`` to one mailbox has
        Graph run up to four of its requests there at once. Exclusive holders queue on a lock
        first, so two of them never each hold half the slots and wait for each other.
        """
        if mailbox is None:
            async with self._global:
                yield
            return
        key = mailbox.lower()
        state = self._mailboxes.setdefault(key, _Mailbox(asyncio.Semaphore(self._per_mailbox)))
        state.users += 1
        taken = 0
        try:
            if exclusive:
                async with state.exclusive:
                    for _ in range(self._per_mailbox):
                        await state.slots.acquire()
                        taken += 1
                    async with self._global:
                        yield
            else:
                await state.slots.acquire()
                taken = 1
                async with self._global:
                    yield
        finally:
            for _ in range(taken):
                state.slots.release()
            state.users -= 1
            # Forget idle mailboxes so a tenant-wide sync does not keep thousands of semaphores.
            if state.users == 0:
                del self._mailboxes[key]


@dataclass
class _Mailbox:
    slots: asyncio.Semaphore
    exclusive: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0
