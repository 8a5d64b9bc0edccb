"""Compiling off the event loop: the worker pool and the replica's byte-bounded cache (real worker
processes, no database)."""

from __future__ import annotations

import asyncio
import marshal
import time
from typing import Any

import pytest

from reconciler.policy import PolicyError, compile_strategy
from reconciler.policy.cache import CompiledCache
from reconciler.policy.pool import CompileLimits, CompilePool


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


# Attribute chains make RestrictedPython's rewriting slow: seconds of CPU for a few dozen KiB.
SLOW = "x = a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p\n" * 6000
# Deeply nested lambdas: every one a code object with a long qualified name (a large compiled form).
LARGE = ("z = " + "lambda: " * 90 + "0\n") * 200


def test_the_pool_compiles_like_the_policy_and_reports_positions() -> None:
    async def scenario() -> tuple[bytes, PolicyError]:
        pool = CompilePool()
        try:
            data = await pool.compile("RESULT = [i * 2 for i in range(3)]\n")
            with pytest.raises(PolicyError) as caught:
                await pool.check("x = 1\nimport os\n")
            return data, caught.value
        finally:
            await pool.close()

    data, error = run(scenario())
    assert marshal.loads(data).co_filename == compile_strategy("RESULT = 1\n").co_filename
    assert (error.line, error.column) == (2, 0) and "'os'" in error.message


def test_code_that_takes_too_long_is_refused_and_the_worker_replaced() -> None:
    async def scenario() -> tuple[str, float, None]:
        pool = CompilePool(CompileLimits(cpu_seconds=0.3, workers=1))
        try:
            started = time.monotonic()
            with pytest.raises(PolicyError) as caught:
                await pool.check(SLOW)
            elapsed = time.monotonic() - started
            return caught.value.message, elapsed, await pool.check("RESULT = 1\n")
        finally:
            await pool.close()

    message, elapsed, after = run(scenario())
    assert message.startswith("code takes too long to compile (more than 0.3 s of CPU time)")
    assert elapsed < CompileLimits(cpu_seconds=0.3).wall_seconds
    assert after is None  # the same pool serves the next request


def test_a_compiled_form_over_the_limit_is_refused() -> None:
    size = len(marshal.dumps(compile_strategy(LARGE)))
    assert size > 256 << 10

    async def scenario() -> str:
        pool = CompilePool(CompileLimits(max_compiled_bytes=256 << 10))
        try:
            with pytest.raises(PolicyError) as caught:
                await pool.check(LARGE)
            return caught.value.message
        finally:
            await pool.close()

    assert run(scenario()) == (
        f"the compiled code is {size} bytes, over the limit of {256 << 10} bytes: shorten it, "
        "or move data tables out of the code into CONFIG"
    )


def test_concurrent_compiles_all_answer() -> None:
    """CPython's AST constructor is not safe in two threads at once: processes never share one."""
    sources = [f"RESULT = {i}\nfor v in range({i}):\n    RESULT += v\n" for i in range(12)]

    async def scenario() -> list[bytes]:
        pool = CompilePool(CompileLimits(workers=3))
        try:
            return await asyncio.gather(*(pool.compile(source) for source in sources))
        finally:
            await pool.close()

    results = run(scenario())
    assert [marshal.loads(data).co_consts[0] for data in results] == list(range(12))


def test_the_event_loop_keeps_running_while_a_slow_compile_runs() -> None:
    async def scenario() -> float:
        pool = CompilePool(CompileLimits(cpu_seconds=1.0, workers=1))
        lag = 0.0
        compiling = asyncio.create_task(pool.check(SLOW))
        try:
            while not compiling.done():
                before = time.monotonic()
                await asyncio.sleep(0.05)
                lag = max(lag, time.monotonic() - before - 0.05)
            with pytest.raises(PolicyError):
                compiling.result()
            return lag
        finally:
            await pool.close()

    assert run(scenario()) < 0.5


def test_the_cache_compiles_each_source_once_and_stays_within_its_bytes() -> None:
    class Counting(CompilePool):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[str] = []

        async def compile(self, code: str) -> bytes:
            self.calls.append(code)
            return await super().compile(code)

    async def scenario() -> tuple[Counting, CompiledCache, list[Any]]:
        pool = Counting()
        cache = CompiledCache(pool, max_bytes=64 << 10)
        try:
            bad = "x = 1\nimport os\n"
            verdicts = [
                await cache.verdict(bad),
                await cache.verdict(bad),
                *await asyncio.gather(*(cache.verdict("RESULT = 1\n") for _ in range(5))),
            ]
            for i in range(200):  # ~1 KiB each: far more than the budget holds
                await cache.compile(f"RESULT = {list(range(i, i + 150))}\n")
            return pool, cache, verdicts
        finally:
            await pool.close()

    pool, cache, verdicts = run(scenario())
    assert verdicts[0] is not None and "line 2" in verdicts[0] and "'os'" in verdicts[0]
    assert verdicts[1] == verdicts[0] and verdicts[2:] == [None] * 5
    assert pool.calls[:2] == ["x = 1\nimport os\n", "RESULT = 1\n"]  # once each, concurrent callers shared
    assert cache.size_bytes <= 64 << 10 and 0 < len(cache) < 200


def test_a_worker_that_compiled_a_large_source_is_replaced_so_its_memory_goes() -> None:
    async def scenario() -> tuple[set[int], set[int], set[int]]:
        pool = CompilePool(CompileLimits(workers=1))
        try:
            await pool.check("RESULT = 1\n")
            small = {worker.process.pid for worker in pool._idle}
            await pool.check("x = 1\n" * 20_000)  # 120 KB: the worker exits after answering
            after_large = {worker.process.pid for worker in pool._idle}
            await pool.check("RESULT = 2\n")
            return small, after_large, {worker.process.pid for worker in pool._idle}
        finally:
            await pool.close()

    small, after_large, fresh = run(scenario())
    assert len(small) == 1 and after_large == set() and len(fresh) == 1 and fresh != small
