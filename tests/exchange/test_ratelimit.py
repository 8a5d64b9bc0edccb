"""The per-key token bucket: bursts pass, then callers wait, and beyond max_wait they are refused."""

from __future__ import annotations

import asyncio

import pytest

from reconciler.exchange import errors
from reconciler.exchange.ratelimit import RateLimiter
from reconciler.outcome import BrokerError


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_burst_then_refusal_per_key_and_refill() -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_second=1.0, burst=3, max_wait_seconds=0.0, clock=clock)

    async def main() -> None:
        for _ in range(3):
            await limiter.acquire("a")
        with pytest.raises(BrokerError) as info:
            await limiter.acquire("a")
        assert info.value.kind == errors.RATE_LIMITED and "per API key" in info.value.message
        await limiter.acquire("b")  # another key has its own bucket
        clock.t = 1.0  # one token back
        await limiter.acquire("a")
        with pytest.raises(BrokerError):
            await limiter.acquire("a")

    asyncio.run(main())


def test_short_waits_are_waited_out() -> None:
    limiter = RateLimiter(rate_per_second=50.0, burst=1, max_wait_seconds=1.0)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for _ in range(4):
            await limiter.acquire("a")
        return loop.time() - start

    elapsed = asyncio.run(main())
    assert 0.05 <= elapsed < 0.5  # three waits of 20 ms each
