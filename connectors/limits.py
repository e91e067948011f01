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

OUTLOOK_MAILBOX_CONCURRENCY = 4


class ConcurrencyLimiter:
    def __init__(
        self, *, global_limit: int, per_mailbox: int = OUTLOOK_MAILBOX_CONCURRENCY
    ) -> None:
        if not 1 <= per_mailbox <= OUTLOOK_MAILBOX_CONCURRENCY:
            raise ValueError(f"per-mailbox concurrency must be 1..{OUTLOOK_MAILBOX_CONCURRENCY}")
        self._global = asyncio.Semaphore(global_limit)
        self._per_mailbox = per_mailbox
        self._mailboxes: dict[str, tuple[asyncio.Semaphore, int]] = {}

    @asynccontextmanager
    async def slot(self, mailbox: str | None) -> AsyncIterator[None]:
        """Hold one request slot (and the mailbox's, when the request targets one)."""
        if mailbox is None:
            async with self._global:
                yield
            return
        key = mailbox.lower()
        semaphore = self._acquire_mailbox(key)
        try:
            async with semaphore, self._global:
                yield
        finally:
            self._release_mailbox(key)

    def _acquire_mailbox(self, key: str) -> asyncio.Semaphore:
        semaphore, users = self._mailboxes.get(key, (None, 0))
        if semaphore is None:
            semaphore = asyncio.Semaphore(self._per_mailbox)
        self._mailboxes[key] = (semaphore, users + 1)
        return semaphore

    def _release_mailbox(self, key: str) -> None:
        # Forget idle mailboxes so a tenant-wide sync does not keep thousands of semaphores.
        semaphore, users = self._mailboxes[key]
        if users <= 1:
            del self._mailboxes[key]
        else:
            self._mailboxes[key] = (semaphore, users - 1)
