"""Behaviour knobs: latency, throttling, injected faults, and the request log tests read.

Throttling follows Exchange's per-app-per-mailbox limits (4 concurrent requests, a request budget
per window), because those are what the sync engine must survive in production.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

FaultAction = Literal["status", "hang", "drop"]
# How a create that reuses a transactionId is answered. Client code and issue reports show a 400
# ErrorDuplicateTransactionId carrying ``@event.existingEventId``; some show it without the id or
# as 409; whether an identical retry gets the first 201 back is not published. Tests switch.
DuplicateTransactionAnswer = Literal["error", "error_without_id", "conflict", "replay"]


@dataclass
class FaultRule:
    """Matches requests by path regex and method; fires with a probability or a fixed count."""

    path: str
    method: str | None = None
    action: FaultAction = "status"
    status: int = 503
    code: str = "ServiceUnavailable"
    message: str = "The service is temporarily unavailable. Please retry."
    retry_after: str | None = None
    probability: float = 1.0
    count: int | None = None
    hang_seconds: float = 300.0
    fired: int = 0
    id: int = 0

    def matches(self, method: str, path: str, rng: random.Random) -> bool:
        if self.count is not None and self.fired >= self.count:
            return False
        if self.method is not None and self.method.upper() != method.upper():
            return False
        if re.search(self.path, path) is None:
            return False
        return rng.random() < self.probability

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Knobs:
    latency_ms: float = 0.0
    mailbox_concurrency: int = 4
    mailbox_budget: int | None = None
    mailbox_budget_window_s: float = 600.0
    exchange_page_size: int = 1000
    fault_seed: int | None = None
    duplicate_transaction: DuplicateTransactionAnswer = "error"
    # Whether a deleted event's transactionId stays spent (not published; the stricter choice).
    spent_transactions_kept: bool = True

    def update(self, values: dict[str, Any]) -> None:
        for name, value in values.items():
            if name not in self.__dataclass_fields__:
                raise ValueError(f"unknown knob {name!r}")
            setattr(self, name, value)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RequestRecord:
    method: str
    path: str
    query: str
    mailbox: str | None
    started: float
    ended: float | None = None
    status: int | None = None
    throttled: bool = False
    fault: int | None = None
    in_batch: bool = False
    app_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Window:
    started: float
    used: int = 0


class ThrottledError(Exception):
    def __init__(self, retry_after: str, message: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.message = message


def format_retry_after(seconds: float) -> str:
    """Rounded up to a tenth: Graph's Retry-After may be fractional and clients must cope."""
    value = max(0.1, math.ceil(seconds * 10) / 10)
    return f"{value:g}"


@dataclass
class Behaviour:
    """Live knob values plus the counters they act on."""

    knobs: Knobs = field(default_factory=Knobs)
    faults: list[FaultRule] = field(default_factory=list)
    log: list[RequestRecord] = field(default_factory=list)
    in_flight: dict[str, int] = field(default_factory=dict)
    max_in_flight: dict[str, int] = field(default_factory=dict)
    windows: dict[str, _Window] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)
    _next_fault: int = 1
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, entry: RequestRecord) -> None:
        """Log a request as it starts, and wake whoever waits for requests to arrive."""
        self.log.append(entry)
        self.arrived.set()

    async def wait_for(self, matches: Callable[[RequestRecord], bool]) -> RequestRecord:
        """The first logged request ``matches`` accepts, waiting for new ones as they arrive."""
        seen = 0
        while True:
            for entry in self.log[seen:]:
                if matches(entry):
                    return entry
            seen = len(self.log)
            self.arrived.clear()
            await self.arrived.wait()

    def add_fault(self, rule: FaultRule) -> FaultRule:
        rule.id = self._next_fault
        self._next_fault += 1
        self.faults.append(rule)
        return rule

    def clear_faults(self) -> None:
        self.faults.clear()

    def match_fault(self, method: str, path: str) -> FaultRule | None:
        for rule in self.faults:
            if rule.matches(method, path, self.rng):
                rule.fired += 1
                return rule
        return None

    def enter_mailbox(self, mailbox: str) -> None:
        """Take a concurrency slot and a budget unit, or raise Throttle."""
        now = time.monotonic()
        budget = self.knobs.mailbox_budget
        if budget is not None:
            window = self.windows.get(mailbox)
            if window is None or now - window.started >= self.knobs.mailbox_budget_window_s:
                window = self.windows[mailbox] = _Window(started=now)
            if window.used >= budget:
                remaining = self.knobs.mailbox_budget_window_s - (now - window.started)
                raise ThrottledError(
                    format_retry_after(remaining),
                    "Application is over its MailboxRequests limit.",
                )
            window.used += 1
        current = self.in_flight.get(mailbox, 0)
        if current >= self.knobs.mailbox_concurrency:
            raise ThrottledError("1", "Application is over its MailboxConcurrency limit.")
        self.in_flight[mailbox] = current + 1
        self.max_in_flight[mailbox] = max(self.max_in_flight.get(mailbox, 0), current + 1)

    def leave_mailbox(self, mailbox: str) -> None:
        self.in_flight[mailbox] = max(0, self.in_flight.get(mailbox, 0) - 1)

    def reset_counters(self) -> None:
        self.log.clear()
        self.max_in_flight.clear()
        self.windows.clear()
