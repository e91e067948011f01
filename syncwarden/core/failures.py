"""Unexpected exceptions: logged with their stack trace and counted, never swallowed silently.

Every catch-all in Syncwarden (the bot turn, the step runner, the outbox, the sync worker, the
scheduled jobs, HTTP routes) hands what it caught to :func:`report_unexpected`. The count lives
in the process, by the place that caught it, and the ``/metrics`` endpoint exports it as
``syncwarden_unexpected_errors_total{where=...}``, so an operator can alert on it without reading
logs. Expected failures (a refused token, a throttled call, a client that hung up) are not
reported here.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any

import structlog

_lock = threading.Lock()
_counts: Counter[str] = Counter()


def report_unexpected(
    logger: structlog.stdlib.BoundLogger,
    event: str,
    error: BaseException,
    *,
    where: str,
    **context: Any,
) -> None:
    """Log ``error`` at ERROR with its traceback and the given context, and count it."""
    with _lock:
        _counts[where] += 1
    logger.error(event, where=where, error_type=type(error).__name__, exc_info=error, **context)


def unexpected_counts() -> Mapping[str, int]:
    """How many unexpected exceptions each place has caught since the process started."""
    with _lock:
        return dict(_counts)
