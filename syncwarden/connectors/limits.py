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

        ``exclusive`` holds every one of the mailbox's slots: Graph runs up to four requests of a
        ``$batch`` against the mailbox at once. It waits for the requests already in flight and
        keeps later ones out until it is done; exclusive holders queue behind each other.
        """
        if mailbox is None:
            async with self._global:
                yield
            return
        key = mailbox.lower()
        state = self._mailboxes.setdefault(key, _Mailbox())
        state.users += 1
        try:
            if exclusive:
                async with state.exclusive:
                    await state.take_all()
                    try:
                        async with self._global:
                            yield
                    finally:
                        await state.give_back(self._per_mailbox)
            else:
                await state.take_one(self._per_mailbox)
                try:
                    async with self._global:
                        yield
                finally:
                    await state.give_back(1)
        finally:
            state.users -= 1
            # Forget idle mailboxes so a tenant-wide sync does not keep thousands of them.
            if state.users == 0:
                del self._mailboxes[key]


@dataclass
class _Mailbox:
    """One mailbox's slots: ordinary requests take one each; a batch takes them all."""

    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    exclusive: asyncio.Lock = field(default_factory=asyncio.Lock)
    active: int = 0
    batch_waiting: bool = False
    users: int = 0

    async def take_one(self, limit: int) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: not self.batch_waiting and self.active < limit)
            self.active += 1

    async def take_all(self) -> None:
        async with self.changed:
            self.batch_waiting = True
            try:
                await self.changed.wait_for(lambda: self.active == 0)
            except BaseException:
                self.batch_waiting = False
                self.changed.notify_all()
                raise
            self.active = -1  # nobody else fits until the batch gives its slots back

    async def give_back(self, slots: int) -> None:
        async with self.changed:
            if self.active < 0:
                self.active, self.batch_waiting = 0, False
            else:
                self.active -= slots
            self.changed.notify_all()
