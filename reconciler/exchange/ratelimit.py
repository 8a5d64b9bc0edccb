"""An in-process token bucket per API key, so one strategy cannot spend its key's exchange quota at once.

Per process only: replicas do not share buckets. CoinDCX's documented ceiling is ~16 requests/s per
key overall, so the defaults stay under it even when a key's strategies run on two replicas.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from reconciler.exchange import errors
from reconciler.outcome import BrokerError


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(
        self,
        rate_per_second: float = 8.0,
        burst: int = 16,
        max_wait_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = rate_per_second
        self._burst = float(burst)
        self._max_wait = max_wait_seconds
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    async def acquire(self, key: str) -> None:
        """Take one token for `key`, waiting up to max_wait for it; raise BrokerError(rate_limited) beyond."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self._burst, now)
            self._prune(now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        wait = (1.0 - bucket.tokens) / self._rate if bucket.tokens < 1.0 else 0.0
        if wait > self._max_wait:
            raise BrokerError(
                errors.RATE_LIMITED,
                f"too many exchange calls: at most {self._rate:g} per second per API key"
                f" (bursts of {self._burst:g}); slow down",
            )
        # Reserve the token now (the balance may go negative) so concurrent callers queue fairly.
        bucket.tokens -= 1.0
        if wait > 0:
            await asyncio.sleep(wait)

    def _prune(self, now: float) -> None:
        # Buckets that have refilled completely carry no information; drop them so keys do not pile up.
        if len(self._buckets) > 10_000:
            full = [k for k, b in self._buckets.items() if b.tokens + (now - b.updated) * self._rate >= self._burst]
            for key in full:
                del self._buckets[key]
