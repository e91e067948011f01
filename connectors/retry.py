"""When and how long to wait before trying a Microsoft 365 request again.

The service's own ``Retry-After`` wins whenever it sent one. Otherwise we back off exponentially
with "full jitter" (a random wait between zero and the exponential bound), which spreads out many
workers that failed at the same moment instead of having them retry in lock-step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from connectors.errors import ConnectorError


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
        if attempt >= self.max_attempts or not error.retryable:
            return False
        return idempotent or error.status == 429

    def delay(self, error: ConnectorError, attempt: int) -> float:
        """Seconds to wait after the failed ``attempt`` (1-based)."""
        if error.retry_after is not None:
            return error.retry_after
        bound = min(self.max_delay_seconds, self.base_delay_seconds * 2 ** (attempt - 1))
        return self.rng.uniform(0, bound)
