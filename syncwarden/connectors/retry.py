"""When and how long to wait before trying a Microsoft 365 request again.

The service's own ``Retry-After`` wins whenever it sent one. Otherwise we back off exponentially
with "full jitter" (a random wait between zero and the exponential bound), which spreads out many
workers that failed at the same moment instead of having them retry in lock-step.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from syncwarden.connectors.errors import ConnectorError, ThrottledError, TransientError
from syncwarden.core.logging import get_logger

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
log = get_logger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay_seconds: float = 0.5
    max_delay_seconds: float = 30.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def should_retry(self, error: ConnectorError, attempt: int, *, idempotent: bool) -> bool:
        """Whether the failed ``attempt`` (1-based) deserves another one.

        A request that is not idempotent is retried only when the service clearly did not act on it
        (429 means "not processed"); after a timeout or a 5xx we cannot know, so we do not
        repeat it.
        """
        # Only what clears up within seconds is retried here; slower conditions (an access policy
        # still propagating) are retried by the provisioning runner on its own, longer schedule.
        if attempt >= self.max_attempts or not isinstance(error, ThrottledError | TransientError):
            return False
        return idempotent or isinstance(error, ThrottledError)

    def delay(self, error: ConnectorError, attempt: int) -> float:
        """Seconds to wait after the failed ``attempt`` (1-based)."""
        if error.retry_after is not None:
            return error.retry_after
        bound = min(self.max_delay_seconds, self.base_delay_seconds * 2 ** (attempt - 1))
        return self.rng.uniform(0, bound)


async def call_with_retries(
    send_once: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    idempotent: bool,
    on_unauthorized: Callable[[], None] | None = None,
    sleep: Sleep = asyncio.sleep,
    label: str = "request",
) -> T:
    """Run ``send_once`` until it succeeds or ``policy`` gives up; re-raise the last error.

    A 401 is retried once, straight away, after ``on_unauthorized`` drops the cached token: tokens
    can be revoked or rolled before their stated expiry.
    """
    attempt = 0
    refreshed = False
    while True:
        attempt += 1
        try:
            return await send_once()
        except ConnectorError as error:
            if error.status == 401 and on_unauthorized is not None and not refreshed:
                on_unauthorized()
                refreshed = True
                attempt -= 1
                continue
            if not policy.should_retry(error, attempt, idempotent=idempotent):
                raise
            wait = policy.delay(error, attempt)
            log.info(
                "connector.retry",
                request=label,
                status=error.status,
                code=error.code,
                attempt=attempt,
                wait_seconds=round(wait, 3),
            )
            await sleep(wait)
