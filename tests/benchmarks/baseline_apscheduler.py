"""The design this project replaces, for the side-by-side report: APScheduler 3 + ThreadPoolExecutor(5)
running every strategy with `exec` in a thread of one process.

Run by `report.py` as its own process, one scenario per run, so its resident memory is its own:

    python tests/benchmarks/baseline_apscheduler.py capacity --count 3000 --interval 1 --window 15
    python tests/benchmarks/baseline_apscheduler.py lag --count 600 --interval 5 --window 15
    python tests/benchmarks/baseline_apscheduler.py memory --count 10000

It prints one JSON object. The workload is the one the replica runs in the same report: the same
strategy source, one interval job per strategy, five threads. Where the old design's details are not
known, the choice favours it: the source is compiled once per strategy (not per run), and nothing is
persisted (no database, so no fsync, no outcome rows, no statistics): it measures the scheduler and
`exec`, with no isolation and no durability at all.
"""

from __future__ import annotations

import argparse
import builtins
import json
import statistics
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

TRIVIAL = "RESULT = 1\n"

# A "trimmed __builtins__", as the replaced design had (not a boundary: see DESIGN.md).
SAFE_BUILTINS = {
    name: getattr(builtins, name)
    for name in (
        "abs", "all", "any", "bool", "dict", "enumerate", "float", "int", "len", "list", "max", "min",
        "print", "range", "round", "sorted", "str", "sum", "tuple", "zip", "isinstance", "Exception",
        "ValueError", "KeyError",
    )
}  # fmt: skip


@dataclass
class Strategy:
    strategy_id: str
    code: Any
    anchor: float  # time.time() of its first tick; ticks at anchor + k * interval
    interval: float
    config: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    result: Any = None


class Harness:
    def __init__(self) -> None:
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(5)},
            # One run at a time per strategy and missed ticks coalesced: the same rules as the replica.
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self.strategies: dict[str, Strategy] = {}
        self.lock = threading.Lock()
        self.finished = 0
        self.failed = 0
        self.lags: list[float] = []
        self.record_lags_after = float("inf")

    def deploy(self, count: int, interval: float, spread: float = 0.0) -> None:
        now = time.time()
        for i in range(count):
            anchor = now + (spread * i / count if spread else 0.0)
            strategy = Strategy(f"s{i:05d}", compile(TRIVIAL, f"s{i:05d}", "exec"), anchor, interval)
            self.strategies[strategy.strategy_id] = strategy
            self.scheduler.add_job(
                self.run,
                "interval",
                seconds=interval,
                next_run_time=datetime.fromtimestamp(anchor).astimezone(),
                args=[strategy.strategy_id],
                id=strategy.strategy_id,
            )

    def run(self, strategy_id: str) -> None:
        started = time.time()
        strategy = self.strategies[strategy_id]
        tick = strategy.anchor + max(0, (started - strategy.anchor) // strategy.interval) * strategy.interval
        namespace = {
            "__builtins__": SAFE_BUILTINS,
            "CONFIG": strategy.config,
            "STATE": strategy.state,
            "pd": pd,
            "np": np,
        }
        try:
            exec(strategy.code, namespace)
            strategy.result = namespace.get("RESULT")
            ok = True
        except Exception:
            ok = False
        with self.lock:
            self.finished += 1
            self.failed += 0 if ok else 1
            if tick >= self.record_lags_after:
                self.lags.append(started - tick)


def memory_mb() -> float:
    """This process's proportional set size, as the replica's is measured (`bench_reconciler.memory_mb`)."""
    with open("/proc/self/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no Pss")


def capacity(count: int, interval: float, window: float) -> dict[str, Any]:
    harness = Harness()
    harness.deploy(count, interval)
    harness.scheduler.start()
    time.sleep(5)  # warm up, as the replica's measurement does
    before = harness.finished
    time.sleep(window)
    rate = (harness.finished - before) / window
    harness.scheduler.shutdown(wait=False)
    return {"executions_per_second": rate, "failed": harness.failed}


def lag(count: int, interval: float, window: float) -> dict[str, Any]:
    harness = Harness()
    harness.scheduler.start()
    harness.deploy(count, interval, spread=interval)
    harness.record_lags_after = time.time() + interval  # steady state, as for the replica
    time.sleep(interval + window)
    with harness.lock:
        lags = sorted(harness.lags)
    harness.scheduler.shutdown(wait=False)
    if not lags:
        return {"executions": 0}
    return {
        "executions": len(lags),
        "p50_ms": statistics.median(lags) * 1000,
        "p99_ms": lags[min(len(lags) - 1, int(len(lags) * 0.99))] * 1000,
    }


def memory(count: int) -> dict[str, Any]:
    harness = Harness()
    harness.scheduler.start()
    harness.deploy(count, 3600)
    deadline = time.monotonic() + 300
    while harness.finished < count and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)  # at rest, as for the replica
    mb = memory_mb()
    harness.scheduler.shutdown(wait=False)
    return {"memory_mb": mb, "ran": harness.finished}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["capacity", "lag", "memory"])
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--window", type=float, default=15.0)
    args = parser.parse_args()
    if args.scenario == "capacity":
        result = capacity(args.count, args.interval, args.window)
    elif args.scenario == "lag":
        result = lag(args.count, args.interval, args.window)
    else:
        result = memory(args.count)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
