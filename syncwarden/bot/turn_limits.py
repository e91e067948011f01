"""How many turns (messages and card clicks) the bot serves per person and per conversation.

One person sending hundreds of messages in seconds would otherwise be served in full, and every
turn can cost database work and Microsoft 365 calls. Each person (their Entra object id, else
their Teams id) and each conversation has a token bucket: a burst of turns at once, then a steady
rate. A turn is served only when both buckets have a token; it then takes one from each, so a
turn one scope refuses costs the other nothing.

A refused turn gets a short polite answer at most once per :data:`NOTICE_INTERVAL_SECONDS` per
bucket (person or conversation), so a flood does not turn into a flood of replies; the rest get
no answer at all. Every refused turn is counted for ``/metrics``.

Incoming (not outgoing) traffic: :mod:`bot.rate_limit` keeps *our* sends within Teams' limits.

The buckets live in this process's memory. That is enough for what they are for, protecting this
process and what it calls; with several replicas a person gets each replica's allowance, and a
restart forgets them. Memory is bounded: a bucket that has filled up again is idle (as good as
new) and is dropped, and beyond :data:`MAX_TRACKED_KEYS` per scope the least recently used go.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from syncwarden.core.settings import LimitSettings

MAX_TRACKED_KEYS = 10_000
# Longer keys are kept as their SHA-256, so memory is bounded in bytes too (Teams' ids are short).
LONGEST_KEY = 128
NOTICE_INTERVAL_SECONDS = 60.0

_NOTICES = {
    "person": "You're sending requests faster than I can handle; please wait {seconds} and "
    "try again.",
    "conversation": "This conversation is sending me requests faster than I can handle; please "
    "wait {seconds} and try again.",
}

_count_lock = threading.Lock()
_limited: Counter[str] = Counter()


# A token refilled by float arithmetic can come out a hair under 1 (0.9999999999997): count it
# as whole, or a person exactly within the rate is refused.
WHOLE_TOKEN = 1.0 - 1e-9


class Scope(StrEnum):
    PERSON = "person"
    CONVERSATION = "conversation"


@dataclass(frozen=True)
class Rate:
    """A token bucket's shape: ``burst`` turns at once, refilled at ``per_minute``."""

    per_minute: float
    burst: int

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    @property
    def per_second(self) -> float:
        return self.per_minute / 60.0


@dataclass(frozen=True)
class Verdict:
    """Whether a turn is served; when not, which scope refused it, the polite answer, and
    whether it is due as a message (``tell``: once per interval per bucket; a card click's
    answer is its HTTP response, so a click may always show it)."""

    allowed: bool
    scope: Scope | None = None
    retry_after_seconds: float = 0.0
    message: str = ""
    tell: bool = False


SERVED = Verdict(allowed=True)


@dataclass
class _Bucket:
    tokens: float
    stamp: float
    noticed_at: float | None = None


class _Buckets:
    """The buckets of one scope, by key, least recently used first."""

    def __init__(self, rate: Rate, max_keys: int, notice_interval: float) -> None:
        self.rate = rate
        self._max_keys = max_keys
        self._notice_interval = notice_interval
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def tokens(self, key: str, now: float) -> float:
        """Tokens the key has now (a key never seen has a full bucket); changes nothing."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return float(self.rate.burst)
        elapsed = max(0.0, now - bucket.stamp)
        return min(float(self.rate.burst), bucket.tokens + elapsed * self.rate.per_second)

    def wait(self, key: str, now: float) -> float:
        """Seconds until the key has a whole token."""
        return max(0.0, (1.0 - self.tokens(key, now)) / self.rate.per_second)

    def take(self, key: str, now: float) -> None:
        tokens = self.tokens(key, now) - 1.0
        bucket = self._touch(key, now)
        bucket.tokens, bucket.stamp = tokens, now

    def notice_due(self, key: str, now: float) -> bool:
        """Whether the key may be told now (and if so, remember that it was)."""
        bucket = self._touch(key, now)
        if bucket.noticed_at is not None and now - bucket.noticed_at < self._notice_interval:
            return False
        bucket.noticed_at = now
        return True

    def _touch(self, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(tokens=self.tokens(key, now), stamp=now)
            self._buckets[key] = bucket
        self._buckets.move_to_end(key)
        self._evict(now)
        return bucket

    def _evict(self, now: float) -> None:
        """Drop idle buckets from the least recently used end, then any beyond the cap."""
        while len(self._buckets) > 1:
            key, bucket = next(iter(self._buckets.items()))
            told_lately = (
                bucket.noticed_at is not None and now - bucket.noticed_at < self._notice_interval
            )
            if told_lately or self.tokens(key, now) < self.rate.burst:
                break
            del self._buckets[key]
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)


class TurnLimiter:
    """Per-person and per-conversation token buckets for incoming turns (see the module)."""

    def __init__(
        self,
        person: Rate,
        conversation: Rate,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_TRACKED_KEYS,
        notice_interval: float = NOTICE_INTERVAL_SECONDS,
    ) -> None:
        self._clock = clock
        self._scopes = {
            Scope.PERSON: _Buckets(person, max_keys, notice_interval),
            Scope.CONVERSATION: _Buckets(conversation, max_keys, notice_interval),
        }

    @classmethod
    def from_settings(
        cls, settings: LimitSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> TurnLimiter:
        return cls(
            Rate(settings.person_turns_per_minute, settings.person_burst),
            Rate(settings.conversation_turns_per_minute, settings.conversation_burst),
            clock=clock,
        )

    def tracked(self, scope: Scope) -> int:
        """How many keys the scope holds now (its memory)."""
        return len(self._scopes[scope])

    def would_serve(self, person_id: str, conversation_id: str) -> bool:
        """Whether a turn would be served now; takes nothing (for work before the turn proper)."""
        now = self._clock()
        return self._refusing(self._keys(person_id, conversation_id), now) is None

    def admit(self, person_id: str, conversation_id: str) -> Verdict:
        """Serve the turn (taking a token from each bucket) or refuse it, and say which."""
        now = self._clock()
        keys = self._keys(person_id, conversation_id)
        refusing = self._refusing(keys, now)
        if refusing is None:
            for scope, key in keys:
                self._scopes[scope].take(key, now)
            return SERVED
        scope, key = refusing
        buckets = self._scopes[scope]
        wait = buckets.wait(key, now)
        with _count_lock:
            _limited[scope.value] += 1
        return Verdict(
            allowed=False,
            scope=scope,
            retry_after_seconds=wait,
            message=_NOTICES[scope.value].format(seconds=_seconds(wait)),
            tell=buckets.notice_due(key, now),
        )

    def _keys(self, person_id: str, conversation_id: str) -> list[tuple[Scope, str]]:
        """The enabled scopes' keys, person first (the more specific answer when both refuse)."""
        wanted = ((Scope.PERSON, person_id.lower()), (Scope.CONVERSATION, conversation_id))
        return [(scope, _short(key)) for scope, key in wanted if self._scopes[scope].rate.enabled]

    def _refusing(self, keys: list[tuple[Scope, str]], now: float) -> tuple[Scope, str] | None:
        for scope, key in keys:
            if self._scopes[scope].tokens(key, now) < WHOLE_TOKEN:
                return scope, key
        return None


def _short(key: str) -> str:
    if len(key) <= LONGEST_KEY:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _seconds(wait: float) -> str:
    whole = max(1, math.ceil(wait))
    return "1 second" if whole == 1 else f"{whole} seconds"


def limited_counts() -> Mapping[str, int]:
    """Turns refused since the process started, by scope (``person``, ``conversation``)."""
    with _count_lock:
        return {scope.value: _limited[scope.value] for scope in Scope}
