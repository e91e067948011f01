"""Notifications gathered during a transaction and handed to the notifier after it commits.

Nobody should hear about a change that was rolled back, and a failure to notify must never undo
a change that was committed; this small queue gives both properties to every use case.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from core.failures import report_unexpected
from core.logging import get_logger
from workflows.ports import Notification, NotificationKind, TicketView

log = get_logger(__name__)


class AfterCommit:
    def __init__(self) -> None:
        self._calls: list[Callable[[], Awaitable[None]]] = []

    def add(self, call: Callable[[], Awaitable[None]]) -> None:
        self._calls.append(call)

    async def deliver(self) -> None:
        for call in self._calls:
            try:
                await call()
            except Exception as error:  # the change is committed either way; the outbox retries
                report_unexpected(log, "notify.failed", error, where="notify.after_commit")
        self._calls.clear()


def status_line(view: TicketView, text: str) -> Notification:
    """The one-line status the IT channel gets as a ticket moves."""
    return Notification(NotificationKind.STATUS, view, f"{view.ref} · {view.subject.name} · {text}")
