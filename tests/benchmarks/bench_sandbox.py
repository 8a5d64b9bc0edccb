"""Benchmark of the sandbox (not collected by pytest: run it directly).

    python tests/benchmarks/bench_sandbox.py [--runs 200] [--concurrency 5]

Measures, in one run on this host:
- the time per execution of an empty strategy through the real sandbox (from `Sandbox.run` to its
  outcome: fork of the zygote, confinement, the strategy, the report), sequentially;
- a fresh `python -c "import pandas"` subprocess, the cost a per-execution interpreter would pay;
- throughput with N executions in flight at once, and the CPU the whole replica side spends per
  execution (supervisor + zygote + children), from the kernel's accounting.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from reconciler.outcome import ExecutionRequest  # noqa: E402
from reconciler.sandbox import Sandbox, SandboxLimits  # noqa: E402

EMPTY = "RESULT = None\n"


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _zygote_cpu(pid: int) -> float:
    """CPU of the zygote and its reaped children so far (utime+stime+cutime+cstime), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(value) for value in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def fresh_interpreter(runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import pandas"], check=True)
        times.append(time.perf_counter() - start)
    return times


async def sequential(sandbox: Sandbox, runs: int) -> list[float]:
    times = []
    for i in range(runs):
        request = ExecutionRequest(f"e{i}", "bench", EMPTY)
        start = time.perf_counter()
        outcome = await sandbox.run(request)
        times.append(time.perf_counter() - start)
        assert outcome.status == "succeeded", outcome
    return times


async def concurrent(sandbox: Sandbox, runs: int, concurrency: int) -> tuple[float, float]:
    queue = list(range(runs))

    async def worker() -> None:
        while queue:
            i = queue.pop()
            outcome = await sandbox.run(ExecutionRequest(f"c{i}", "bench", EMPTY))
            assert outcome.status == "succeeded", outcome

    zygote_pid = sandbox._zygote.process.pid  # type: ignore[union-attr]
    cpu_before, zygote_before = _cpu_seconds(), _zygote_cpu(zygote_pid)
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    cpu = (_cpu_seconds() - cpu_before) + (_zygote_cpu(zygote_pid) - zygote_before)
    return runs / elapsed, cpu / runs


def ms(value: float) -> str:
    return f"{value * 1000:.2f} ms"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=5)
    parser.add_argument("--fresh-runs", type=int, default=10)
    args = parser.parse_args()

    # Other processes on the host compete for the same two cores: say how busy it was.
    print(f"host load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    sandbox = Sandbox(SandboxLimits(memory_mb=100, cpu_seconds=5, wall_seconds=10.0))
    start = time.perf_counter()
    await sandbox.start()
    print(f"zygote start-up (once per replica): {ms(time.perf_counter() - start)}")
    print(f"layers: {sandbox.layers}")
    await sequential(sandbox, 20)  # warm-up

    times = await sequential(sandbox, args.runs)
    fresh = fresh_interpreter(args.fresh_runs)
    median, fresh_median = statistics.median(times), statistics.median(fresh)
    p95 = sorted(times)[int(len(times) * 0.95) - 1]
    print(
        f"sandbox, empty strategy, {args.runs} sequential runs: median {ms(median)}, p95 {ms(p95)}, "
        f"min {ms(min(times))}"
    )
    print(f"fresh `python -c 'import pandas'`, {args.fresh_runs} runs: median {ms(fresh_median)}")
    print(f"speed-up: {fresh_median / median:.1f}x")

    throughput, cpu_per_run = await concurrent(sandbox, args.runs * 2, args.concurrency)
    print(
        f"throughput, {args.concurrency} concurrent: {throughput:.0f} executions/s on {os.cpu_count()} "
        f"cores; CPU per execution (supervisor + zygote + child): {ms(cpu_per_run)}"
    )
    await sandbox.close()

    print(f"host load average after: {os.getloadavg()[0]:.2f}")
    ok = median <= 0.010 and fresh_median / median >= 30
    print(
        f"targets (median <= 10 ms, >= 30x): {'met' if ok else 'NOT met'}; "
        f"200/s needs CPU per execution <= {ms(os.cpu_count() / 200)}: "
        f"{'met' if throughput >= 200 else 'NOT met'}"
    )


if __name__ == "__main__":
    asyncio.run(main())
