"""This process's optimistic SQLite commits that wait at the same moment, sent as one transaction.

Every SQLite commit ends in ``COMMIT``, and with ``synchronous=FULL`` (SQLite's default, which we
keep: a committed decision must survive a power cut, since the step it queued may already have
changed Microsoft 365) that is an ``fsync`` of the write-ahead log, the pages the commit touched
written to it (an approve click touches about sixteen: the ticket, its decision, its steps, the
audit trail, the outbox and their indexes) and a trip to aiosqlite's thread and back. Under a
burst of clicks those commits queue for SQLite's one write lock anyway
(:func:`core.db.sqlite_writers_queue`), one after another.

So the commits of optimistic units of work (an approver's decision: see
:mod:`core.sqlite_direct`) that are waiting when the write lock comes free go together: the
first of them, holding the process's turn, sends all of them in one trip as one transaction
(:meth:`core.sqlite_driver.OneTripConnection.commit_group`), each commit its own savepoint, and
each gets its own answer: committed, its guarded row changed (it wrote nothing and decides
again), or its own error (it wrote nothing, the others are not affected). A commit is answered
only once the group's ``COMMIT`` is done, so every answer is as durable as before; the group
shares the ``fsync``, the index pages and the trip. Alone, a commit is sent exactly as before.

Measured 2026-12-04 on the development machine (``bench/click_bench.py``, SQLite, approve at 50
clients; the README's "Turn performance"): 2.2 to 2.5 ms of CPU a click
before, 1.5 to 2.0 after, and 390 to 440 clicks a second became 510 to 680. The price: a
commit may wait for the others of its group (a trip of at most :data:`MOST_IN_A_GROUP` commits,
milliseconds), where before it waited for each of them in turn.

One writer process's commits can only group with each other; other processes on the same file
still meet SQLite's own lock, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from syncwarden.core.sqlite_driver import GroupedAnswer, GroupedCommit, OneTripConnection

# A group's size is bounded so that the write lock is never held long for one trip, by this
# process or against another's (about a tenth of a millisecond of SQLite's work per click).
MOST_IN_A_GROUP = 64

WriterTurn = Callable[[], AbstractAsyncContextManager[Any]]


@dataclass(eq=False)
class _Waiting:
    """A commit not yet answered; ``woken`` when it is answered or its turn to send has come."""

    commit: GroupedCommit
    answer: asyncio.Future[bool]
    woken: asyncio.Event = field(default_factory=asyncio.Event)


class GroupCommits:
    """The commits waiting for one database in one event loop, and whether a group is on its way.

    Made once per engine and event loop (:func:`group_commits`); used only on the loop's thread.
    """

    def __init__(self) -> None:
        self._waiting: list[_Waiting] = []
        self._sending = False

    async def commit(
        self, driver: OneTripConnection, writer_turn: WriterTurn, commit: GroupedCommit
    ) -> bool:
        """Commit ``commit`` with whatever else is waiting: True when it was committed, False
        when its guarded update found its row changed (nothing of it was written); its own
        error (sqlite3's, nothing of it written) is raised.

        ``driver`` (a connection this caller holds until it is answered) sends the group when
        this commit is the one to send it, in ``writer_turn()``. Cancelled while it waits, the
        commit is not sent; cancelled once sent, it may still be committed, as a cancelled trip
        always could be.
        """
        waiting = _Waiting(commit, asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        try:
            while not waiting.answer.done():
                if self._sending:
                    await waiting.woken.wait()
                    waiting.woken.clear()
                else:
                    await self._send(driver, writer_turn)
        except BaseException:
            if waiting in self._waiting:
                self._waiting.remove(waiting)
            waiting.answer.cancel()
            self._wake_next()
            raise
        return waiting.answer.result()

    async def _send(self, driver: OneTripConnection, writer_turn: WriterTurn) -> None:
        """In the process's turn at the write lock, send up to :data:`MOST_IN_A_GROUP` of the
        commits waiting then (this one among them); their answers arrive however this task
        ends, even cancelled mid-trip (the trip runs on, on aiosqlite's thread)."""
        self._sending = True
        try:
            async with writer_turn():
                group = self._waiting[:MOST_IN_A_GROUP]  # a cancelled commit has left it
                del self._waiting[: len(group)]
                trip = asyncio.ensure_future(driver.commit_group([w.commit for w in group]))
                trip.add_done_callback(partial(_answer, group))
                # A failed trip is every commit's answer, this one's too: read there, not here.
                with contextlib.suppress(Exception):
                    await asyncio.shield(trip)
        finally:
            self._sending = False
            self._wake_next()

    def _wake_next(self) -> None:
        """The first commit still waiting sends the next group (nobody else is sending one)."""
        if not self._sending and self._waiting:
            self._waiting[0].woken.set()


def _answer(group: Sequence[_Waiting], trip: asyncio.Future[list[GroupedAnswer]]) -> None:
    """Each commit's own answer, or the whole trip's error for every one of them."""
    failed = asyncio.CancelledError() if trip.cancelled() else trip.exception()
    answers: Sequence[GroupedAnswer | BaseException] = (
        trip.result() if failed is None else [failed] * len(group)
    )
    for waiting, answer in zip(group, answers, strict=True):
        if not waiting.answer.done():
            if isinstance(answer, BaseException):
                waiting.answer.set_exception(answer)
            else:
                waiting.answer.set_result(answer)
        waiting.woken.set()


_groups: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, weakref.WeakKeyDictionary[object, GroupCommits]
] = weakref.WeakKeyDictionary()


def group_commits(engine: object) -> GroupCommits:
    """The one :class:`GroupCommits` of ``engine`` in the running event loop."""
    per_engine = _groups.setdefault(asyncio.get_running_loop(), weakref.WeakKeyDictionary())
    return per_engine.setdefault(engine, GroupCommits())
